"""FP8 linear layers through NVIDIA Transformer Engine: block linears become `te.Linear`
and every generation runs under `te.fp8_autocast` with a delayed-scaling recipe."""

from __future__ import annotations

import torch

from .base import Float8Component, parse_choice_param
from .layers import is_modulation, replace_linears


class TransformerEngineFloat8(Float8Component):
    name = "fp8-te"
    summary = ("Transformer Engine te.Linear under fp8_autocast, E4M3; per-tensor current scaling "
               "(fp8-te) or delayed scaling from an amax history (fp8-te:delayed); eager only")
    packages = ("transformer_engine",)
    default_param = "current"
    # TE's modules are torch.compiler.disable()d: under the fullgraph regional compile they raise
    # "Skip calling `torch.compiler.disable()`d function" (seen on the H100).
    conflicts_with = frozenset({"compile-regional", "compile-full"})

    def apply(self, pipe) -> None:
        import transformer_engine.pytorch as te

        def to_te(linear: torch.nn.Linear):
            layer = te.Linear(
                linear.in_features, linear.out_features, bias=linear.bias is not None,
                params_dtype=linear.weight.dtype, device=linear.weight.device,
            )
            with torch.no_grad():
                layer.weight.copy_(linear.weight)
                if linear.bias is not None:
                    layer.bias.copy_(linear.bias)
            return layer

        # The modulation linears stay bf16: they see one row per image, and TE's FP8 GEMMs need rows
        # in multiples of 8 (seen on the H100: "FP8 execution requires the product of all
        # dimensions except the last ... divisible by 8").
        if not replace_linears(pipe.transformer, to_te, keep=is_modulation):
            raise RuntimeError("fp8-te found no block linear to replace")

    def validate_param(self) -> None:
        parse_choice_param(self, ("current", "delayed"))

    def call_context(self, pipe):
        import transformer_engine.pytorch as te
        from transformer_engine.common.recipe import DelayedScaling, Float8CurrentScaling, Format

        # Current scaling by default: inference has no earlier iterations to take an amax history
        # from, and delayed scaling measured SSIM 0.99895 on the H100, as low as FP8 without scales.
        if self.param == "delayed":
            recipe = DelayedScaling(fp8_format=Format.E4M3, amax_history_len=16, amax_compute_algo="max")
        else:
            recipe = Float8CurrentScaling(fp8_format=Format.E4M3)
        return lambda: te.fp8_autocast(enabled=True, fp8_recipe=recipe)

