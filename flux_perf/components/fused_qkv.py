"""Fused QKV projections: one matmul for q, k and v instead of three."""

from __future__ import annotations

import torch

from .base import Component, Phase
from .layers import attention_modules

_UNFUSED = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")


class FusedQKV(Component):
    name = "fused-qkv"
    summary = "diffusers fuse_qkv_projections(), then frees the unfused copies it keeps (+4.3 GB at full size)"
    phase = Phase.FUSION
    lossless = True
    # torchao/TE/scaled_mm quantise Linear layers; fusing after them would concatenate
    # quantised weights. Phase order (fuse first) makes the stack well defined.

    def apply(self, pipe) -> None:
        transformer = pipe.transformer
        transformer.fuse_qkv_projections()
        fused = 0
        for module in attention_modules(transformer):
            if getattr(module, "fused_projections", False):
                fused += 1
                for attr in _UNFUSED:
                    if hasattr(module, attr):
                        delattr(module, attr)
        if not fused:
            raise RuntimeError("fuse_qkv_projections() fused no attention module")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

