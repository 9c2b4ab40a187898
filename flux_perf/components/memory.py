"""Memory fallbacks for out-of-memory cases, used only when asked for: they trade speed for memory."""

from __future__ import annotations

from .base import Component, Phase


class VaeTiling(Component):
    name = "vae-tiling"
    summary = "decode/encode the VAE in overlapping tiles (lower peak memory at large sizes)"
    phase = Phase.LAYOUT
    lossless = False  # tile seams blend

    def apply(self, pipe) -> None:
        pipe.vae.enable_tiling()


class AttentionSlicing(Component):
    name = "attention-slicing"
    summary = "the guide's attention slicing (pipe.enable_attention_slicing)"
    phase = Phase.LAYOUT
    lossless = True

    def extra_unmet(self, caps):
        # Checked for real at apply time too; diffusers' FLUX transformer has no slicing hook,
        # so enable_attention_slicing() silently does nothing for it.
        from diffusers import FluxTransformer2DModel

        if not hasattr(FluxTransformer2DModel, "set_attention_slice"):
            return ("attention-slicing: FluxTransformer2DModel has no set_attention_slice, so "
                    "pipe.enable_attention_slicing() is a silent no-op for FLUX; use vae-tiling or model-cpu-offload")
        return None

    def apply(self, pipe) -> None:
        pipe.enable_attention_slicing()


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

