"""FP8 linear layers with static activation scales: torchao's Float8StaticActivationFloat8WeightConfig
(observer flow), one per-tensor scale per linear input, learnt from one calibration generation.

Why: with dynamic per-row scales every linear input is read twice (row amax, then cast) before its
GEMM, a quarter of `fast`'s step (docs/fast-stack.md). A fixed scale makes the cast a pointwise op
that compile fuses into whatever produces the input (norm + modulation, GELU). The price is
fidelity: values beyond the calibrated range saturate, and one scale covers every token.

The calibration generation runs once per built pipeline, eager, between quantization and compile:
the parameter names its scenario (by default 1024x1024@8 with seed 1, another noise draw than the
measured one), on the suite's prompt and reference image.
"""

from __future__ import annotations

from ..model.scenarios import Scenario, ScenarioError, parse_scenario
from .base import CALIBRATION_SCENARIO, Capabilities, ComponentError, Float8Component
from .layers import quantizable_block_linear


def _static_config(step: str):
    from torchao.prototype.quantization.quant_api import Float8StaticActivationFloat8WeightConfig
    from torchao.quantization import PerTensor

    # set_inductor_config=False, as for fp8-torchao: no global inductor switches from a component.
    return Float8StaticActivationFloat8WeightConfig(step=step, granularity=PerTensor(), set_inductor_config=False)


class TorchaoStaticFloat8(Float8Component):
    name = "fp8-static"
    summary = ("torchao Float8StaticActivationFloat8WeightConfig on the block linears: per-tensor scales, "
               "activations' calibrated on one generation (parameter: its scenario)")
    packages = ("torchao",)
    default_param = CALIBRATION_SCENARIO
    # torch's _scaled_mm has a CPU kernel for per-tensor scales: the tiny model proves the path on CPU.
    needs_cuda = False
    min_capability = None

    def __init__(self, param: str | None = None):
        super().__init__(param)
        self.calibrated_linears: int = 0

    def validate_param(self) -> None:
        try:
            self.scenario = parse_scenario(self.param)
        except ScenarioError as error:
            raise ComponentError(f"{self.name}:{self.param}: not a calibration scenario ({error})") from None

    def extra_unmet(self, caps: Capabilities) -> str | None:
        if caps.device == "cuda" and caps.capability and caps.capability < (8, 9):
            return f"{self.spec} needs FP8 tensor cores (compute capability >= 8.9); {caps.gpu_name} has " \
                   f"{caps.capability[0]}.{caps.capability[1]}"
        try:
            import torchao.prototype.quantization.quant_api as prototype
        except ImportError as error:
            return f"{self.spec} cannot import torchao's prototype quantization API: {error}"
        if not hasattr(prototype, "Float8StaticActivationFloat8WeightConfig"):
            return f"{self.spec} needs a torchao with Float8StaticActivationFloat8WeightConfig (0.18 has it)"
        return None

    def apply(self, pipe) -> None:
        from torchao.quantization import quantize_

        quantize_(pipe.transformer, _static_config("prepare"), filter_fn=quantizable_block_linear)

    def calibration_scenario(self) -> Scenario | None:
        return self.scenario

    def after_calibration(self, pipe) -> None:
        from torchao.prototype.quantization.quant_api import Float8ObservedLinear
        from torchao.quantization import quantize_

        observed = {name: m for name, m in pipe.transformer.named_modules() if isinstance(m, Float8ObservedLinear)}
        if not observed:
            raise ComponentError(f"{self.spec}: no block linear was prepared for calibration")
        unseen = [name for name, module in observed.items() if not hasattr(module.input_act_obs, "min_val")]
        if unseen:
            raise ComponentError(f"{self.spec}: the calibration generation never reached {len(unseen)} of "
                                 f"{len(observed)} observed linears (first: {unseen[0]})")
        quantize_(pipe.transformer, _static_config("convert"), filter_fn=lambda m, _: isinstance(m, Float8ObservedLinear))
        self.calibrated_linears = len(observed)

    def report(self) -> dict:
        return {"calibrated_linears": self.calibrated_linears, "calibration": self.scenario.id}
