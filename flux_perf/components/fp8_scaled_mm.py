"""FP8 linear layers on plain `torch._scaled_mm`: e4m3 weights with per-row scales, activations
quantised per row on the fly (fused by torch.compile when stacked with it).

`fp8-scaled-mm:unscaled` casts to e4m3 with unit scales: a deliberately broken variant
that the fidelity gate must catch."""

from __future__ import annotations

import torch
from torch import nn

from .base import Float8Component, parse_choice_param
from .layers import replace_linears

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448


def _rowwise(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 values and float32 per-row scales (tensor ~ values * scales)."""
    amax = tensor.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    scale = amax / E4M3_MAX
    return (tensor.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


class ScaledMMLinear(nn.Module):
    def __init__(self, linear: nn.Linear, scaled: bool = True):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scaled = scaled
        weight = linear.weight.detach()
        if scaled:
            weight_fp8, weight_scale = _rowwise(weight)
        else:
            weight_fp8 = weight.to(E4M3)
            weight_scale = torch.ones(weight.shape[0], 1, device=weight.device)
        # _scaled_mm wants the second operand column-major: keep (out, in) row-major, pass .t().
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("weight_scale", weight_scale.t().contiguous())  # (1, out)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.scaled:
            x_fp8, x_scale = _rowwise(rows)
        else:
            x_fp8 = rows.to(E4M3)
            x_scale = torch.ones(rows.shape[0], 1, device=rows.device)
        out = torch._scaled_mm(
            x_fp8, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
            bias=self.bias, out_dtype=x.dtype, use_fast_accum=True,
        )
        return out.reshape(*x.shape[:-1], self.out_features)


class ScaledMMFloat8(Float8Component):
    name = "fp8-scaled-mm"
    summary = "block linears on torch._scaled_mm with row-wise e4m3 scales (no extra package)"
    default_param = "rowwise"

    def validate_param(self) -> None:
        parse_choice_param(self, ("rowwise", "unscaled"))

    def apply(self, pipe) -> None:
        scaled = self.param == "rowwise"
        count = replace_linears(pipe.transformer, lambda linear: ScaledMMLinear(linear, scaled))
        if not count:
            raise RuntimeError("fp8-scaled-mm found no block linear to replace")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

