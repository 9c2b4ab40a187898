"""Static FP8 scales (`fp8-static`) on the tiny model, on the CPU (torch's _scaled_mm has a CPU
kernel for per-tensor scales): the calibration generation the stack runs, the scales it leaves, and
the clear errors around it. Its speed and fidelity at full size are measured on the H100."""

import numpy as np
import pytest
import torch

pytest.importorskip("torchao.prototype.quantization.quant_api")

from flux_perf.components import ComponentError, make_component  # noqa: E402
from flux_perf.model.generate import generate_with  # noqa: E402
from flux_perf.instrument.runner import CaseRunner  # noqa: E402
from flux_perf.model.scenarios import Scenario  # noqa: E402
from flux_perf.components.stacks import StackError, parse_stack  # noqa: E402

SCENARIO = Scenario(64, 64, 2)
E4M3_MAX = 448.0


def test_scales_are_the_calibration_generations_absolute_maxima(tiny_model):
    """Each linear's activation scale is max|input| / 448 over exactly the calibration generation."""
    stack = parse_stack("fp8-static:64x64@3-s5")
    seen: dict[str, float] = {}
    asked = []

    def calibrate(scenario, contexts):
        asked.append(scenario)
        blocks = tiny_model.pipe.transformer
        hooks = [
            module.register_forward_pre_hook(
                lambda m, args, name=name: seen.__setitem__(name, max(seen.get(name, 0.0), args[0].abs().max().item())))
            for name, module in blocks.named_modules() if type(module).__name__ == "Float8ObservedLinear"
        ]
        generate_with(tiny_model, scenario, contexts)
        for hook in hooks:
            hook.remove()

    stack.apply(tiny_model.pipe, calibrate)
    assert asked == [Scenario(64, 64, 3, seed=5)], "the parameter names the calibration scenario, seed included"
    modules = dict(tiny_model.pipe.transformer.named_modules())
    assert seen and len(seen) == stack.report()["fp8-static:64x64@3-s5"]["calibrated_linears"]
    for name, amax in seen.items():
        weight = modules[name].weight
        assert type(weight).__name__ == "PrototypeFloat8Tensor", f"{name} was not converted"
        assert weight.act_quant_scale.item() == pytest.approx(amax / E4M3_MAX, rel=1e-2), name
    # Embedders and the output projection stay in full precision, as with fp8-torchao.
    assert type(tiny_model.pipe.transformer.proj_out.weight) is torch.nn.Parameter


def test_the_runner_calibrates_once_and_the_output_stays_near_bf16(tiny_source):
    logs = []
    runner = CaseRunner(tiny_source, "cpu", log=logs.append)
    reference = runner.case(parse_stack("bf16"), SCENARIO).round()
    case = runner.case(parse_stack("fp8-static:64x64@2-s1"), SCENARIO)
    first, again = case.round(), case.round()
    assert sum("calibrating on one generation at 64x64@2-s1" in line for line in logs) == 1
    assert np.array_equal(first.latents, again.latents), "fixed scales: every round computes the same"
    moved = np.linalg.norm(first.latents - reference.latents) / np.linalg.norm(reference.latents)
    assert 0 < moved < 0.02, f"FP8 is lossy but close on the tiny model; moved {moved:.2e}"
    assert not parse_stack("fast").lossless, "so the gate judges it as lossy"


def test_values_beyond_the_calibrated_range_saturate_instead_of_overflowing(tiny_model):
    stack = parse_stack("fp8-static:64x64@2-s1")
    stack.apply(tiny_model.pipe, lambda scenario, contexts: generate_with(tiny_model, scenario, contexts))
    linear = tiny_model.pipe.transformer.transformer_blocks[0].ff.net[2]
    limit = linear.weight.act_quant_scale.item() * E4M3_MAX
    x = torch.full((1, 4, linear.in_features), limit, dtype=linear.weight.dtype)
    with torch.inference_mode():
        inside, far_beyond = linear(x), linear(x * 1000)
    assert torch.isfinite(far_beyond).all(), "e4m3 has no infinity: an unclamped cast would give NaN"
    torch.testing.assert_close(far_beyond, inside)  # clamped to the calibrated maximum


def test_a_stack_applied_without_a_calibration_run_says_so(tiny_model):
    with pytest.raises(StackError, match="fp8-static:64x64@2 calibrates on one generation"):
        parse_stack("fp8-static:64x64@2").apply(tiny_model.pipe)


def test_a_calibration_that_reached_no_linear_is_an_error(tiny_model):
    component = make_component("fp8-static:64x64@2")
    component.apply(tiny_model.pipe)  # observers in, but no generation ran
    with pytest.raises(ComponentError, match=r"never reached \d+ of \d+ observed linears"):
        component.after_calibration(tiny_model.pipe)


@pytest.mark.parametrize("param, message", [
    ("big", "fp8-static:big: not a calibration scenario"),
    ("1000x512@8", "height=1000 is not a multiple of 16"),
    ("512x512@0", "steps=0"),
])
def test_a_bad_calibration_scenario_names_the_value(param, message):
    with pytest.raises(ComponentError, match=message):
        make_component(f"fp8-static:{param}")


def test_the_default_calibrates_on_another_noise_draw_than_the_measured_one():
    component = make_component("fp8-static")
    assert component.calibration_scenario() == Scenario(1024, 1024, 8, seed=1)
    assert component.spec == "fp8-static"
