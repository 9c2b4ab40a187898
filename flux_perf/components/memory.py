"""Memory fallbacks for out-of-memory cases, used only when asked for: they trade speed for memory.

No attention slicing: diffusers 0.42.1 has none that works on FLUX (docs/components.md)."""

from __future__ import annotations

from .base import Component, Phase


class VaeTiling(Component):
    name = "vae-tiling"
    summary = "decode/encode the VAE in overlapping tiles (lower peak memory at large sizes)"
    phase = Phase.LAYOUT
    lossless = False  # tile seams blend

    def apply(self, pipe) -> None:
        pipe.vae.enable_tiling()


class ModelCpuOffload(Component):
    name = "model-cpu-offload"
    summary = "keep each model on the CPU until it runs (enable_model_cpu_offload)"
    phase = Phase.OFFLOAD
    lossless = True
    needs_cuda = True
    packages = ("accelerate",)
    tags = frozenset({"offload"})
    conflicts_with = frozenset({"cuda-graphs", "compile-regional", "compile-full", "tensorrt", "vae-compile"})

    def apply(self, pipe) -> None:
        pipe.enable_model_cpu_offload()

