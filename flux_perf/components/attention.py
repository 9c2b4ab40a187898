"""Attention kernels, through diffusers' own attention backends (`set_attention_backend`)."""

from __future__ import annotations

import os
from typing import ClassVar

from .base import Component, Phase


class AttentionBackend(Component):
    exclusive = "attention"
    phase = Phase.ATTENTION
    lossless = True
    backend: ClassVar[str]

    def apply(self, pipe) -> None:
        pipe.transformer.set_attention_backend(self.backend)


class SdpaAttention(AttentionBackend):
    name = "attn-sdpa"
    summary = "PyTorch SDPA, PyTorch picks the kernel (diffusers 'native')"
    backend = "native"


class CudnnAttention(AttentionBackend):
    name = "attn-cudnn"
    summary = "cuDNN SDPA kernel (diffusers '_native_cudnn'); fastest bf16 attention measured on H100"
    backend = "_native_cudnn"
    needs_cuda = True
    min_capability = (8, 0)


class FlashSdpaAttention(AttentionBackend):
    name = "attn-flash-sdpa"
    summary = "PyTorch's built-in FlashAttention-2 SDPA kernel (diffusers '_native_flash')"
    backend = "_native_flash"
    needs_cuda = True
    min_capability = (8, 0)


class EfficientSdpaAttention(AttentionBackend):
    name = "attn-efficient"
    summary = "PyTorch's memory-efficient SDPA kernel (diffusers '_native_efficient')"
    backend = "_native_efficient"
    needs_cuda = True


class FlashAttn2(AttentionBackend):
    name = "attn-flash-attn"
    summary = "the flash-attn package's FlashAttention-2 (diffusers 'flash')"
    backend = "flash"
    needs_cuda = True
    min_capability = (8, 0)
    packages = ("flash_attn",)


class FlashAttn3(AttentionBackend):
    name = "attn-fa3"
    summary = "FlashAttention-3 for Hopper from flash-attn's hopper build (diffusers '_flash_3')"
    backend = "_flash_3"
    needs_cuda = True
    min_capability = (9, 0)
    packages = ("flash_attn_interface",)


def restore_default_backend(pipe) -> None:
    """diffusers keeps the last backend set on *any* model as a process-wide default, which a
    freshly built model then silently uses (seen: stacks after `attn-efficient` ran 55 % slower
    at 1024). Setting the default explicitly on each new pipeline resets that global too."""
    pipe.transformer.set_attention_backend(os.environ.get("DIFFUSERS_ATTN_BACKEND", "native"))

