"""FP8 linear layers through NVIDIA Transformer Engine: block linears become `te.Linear`
and every generation runs under `te.fp8_autocast` with a delayed-scaling recipe."""

from __future__ import annotations

import torch

from .base import Float8Component
from .fp8_scaled_mm import replace_linears


class TransformerEngineFloat8(Float8Component):
    name = "fp8-te"
    summary = "Transformer Engine te.Linear under fp8_autocast (DelayedScaling, HYBRID format)"
    packages = ("transformer_engine",)

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

        if not replace_linears(pipe.transformer, to_te):
            raise RuntimeError("fp8-te found no block linear to replace")

    def call_context(self, pipe):
        import transformer_engine.pytorch as te
        from transformer_engine.common.recipe import DelayedScaling, Format

        recipe = DelayedScaling(fp8_format=Format.HYBRID, amax_history_len=16, amax_compute_algo="max")
        return lambda: te.fp8_autocast(enabled=True, fp8_recipe=recipe)

