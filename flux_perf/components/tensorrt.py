"""TensorRT through torch-tensorrt's torch.compile backend, on the repeated blocks."""

from __future__ import annotations

import torch

from .base import Component, Phase


class TensorRT(Component):
    name = "tensorrt"
    summary = "torch_tensorrt compile backend on the repeated transformer blocks (bf16 engines)"
    exclusive = "compile"
    phase = Phase.COMPILE
    lossless = True
    needs_cuda = True
    packages = ("torch_tensorrt",)

    def apply(self, pipe) -> None:
        import torch_tensorrt  # noqa: F401  registers the "tensorrt" backend

        pipe.transformer.compile_repeated_blocks(
            backend="tensorrt",
            dynamic=False,
            options={"enabled_precisions": {torch.bfloat16}, "use_explicit_typing": False, "min_block_size": 1},
        )

