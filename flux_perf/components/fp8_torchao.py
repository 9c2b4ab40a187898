"""FP8 linear layers through torchao: dynamic float8 activations and weights, per-row scales."""

from __future__ import annotations

from .base import Float8Component, parse_choice_param
from .layers import quantizable_block_linear

GRANULARITIES = ("row", "tensor")


class TorchaoFloat8(Float8Component):
    name = "fp8-torchao"
    summary = "torchao Float8DynamicActivationFloat8WeightConfig on the block linears (per-row by default)"
    packages = ("torchao",)
    default_param = "row"

    def validate_param(self) -> None:
        parse_choice_param(self, GRANULARITIES)

    def apply(self, pipe) -> None:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

        granularity = PerRow() if self.param == "row" else PerTensor()
        # set_inductor_config=False: torchao would otherwise switch on coordinate-descent
        # tuning globally, which multiplies compile time and leaks into every later stack.
        # The `inductor-tuning` component turns such settings on explicitly.
        config = Float8DynamicActivationFloat8WeightConfig(granularity=granularity, set_inductor_config=False)
        quantize_(pipe.transformer, config, filter_fn=quantizable_block_linear)

