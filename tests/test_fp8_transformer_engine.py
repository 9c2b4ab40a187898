"""fp8-te's plumbing on the CPU, with a stand-in `transformer_engine` whose `te.Linear` does plain
linear math (the real one needs an FP8 GPU and a 276 MB wheel): which linears it swaps, that
their weights arrive intact, and that every generation runs under `fp8_autocast` with the
recipe asked for (current scaling by default, delayed on request). It ran on the H100 too
(docs/components.md)."""

import contextlib
import sys
import types

import numpy as np
import pytest
import torch

from flux_perf.components import make_component
from flux_perf.model.generate import generate_with
from flux_perf.model.scenarios import Scenario


@pytest.fixture
def stand_in_te(monkeypatch):
    entered = []

    class Linear(torch.nn.Linear):
        def __init__(self, in_features, out_features, bias=True, params_dtype=None, device=None):
            super().__init__(in_features, out_features, bias=bias, dtype=params_dtype, device=device)

    @contextlib.contextmanager
    def fp8_autocast(enabled, fp8_recipe):
        entered.append((enabled, fp8_recipe))
        yield

    class DelayedScaling:
        def __init__(self, fp8_format, amax_history_len, amax_compute_algo):
            self.fp8_format, self.amax_history_len, self.amax_compute_algo = fp8_format, amax_history_len, amax_compute_algo

    class Float8CurrentScaling:
        def __init__(self, fp8_format):
            self.fp8_format = fp8_format

    modules = {"transformer_engine": types.ModuleType("transformer_engine"),
               "transformer_engine.pytorch": types.ModuleType("transformer_engine.pytorch"),
               "transformer_engine.common": types.ModuleType("transformer_engine.common"),
               "transformer_engine.common.recipe": types.ModuleType("transformer_engine.common.recipe")}
    modules["transformer_engine.pytorch"].Linear = Linear
    modules["transformer_engine.pytorch"].fp8_autocast = fp8_autocast
    modules["transformer_engine.common.recipe"].DelayedScaling = DelayedScaling
    modules["transformer_engine.common.recipe"].Float8CurrentScaling = Float8CurrentScaling
    modules["transformer_engine.common.recipe"].Format = types.SimpleNamespace(E4M3="E4M3", HYBRID="HYBRID")
    modules["transformer_engine"].pytorch = modules["transformer_engine.pytorch"]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(Linear=Linear, entered=entered)


def test_block_linears_become_te_linear_and_generations_run_under_fp8_autocast(tiny_model, stand_in_te):
    scenario = Scenario(64, 64, 2)
    reference = generate_with(tiny_model, scenario)
    transformer = tiny_model.pipe.transformer
    blocks_before = {name for name, m in transformer.named_modules()
                     if isinstance(m, torch.nn.Linear) and name.startswith(("transformer_blocks.", "single_"))}
    component = make_component("fp8-te")
    component.apply(tiny_model.pipe)
    swapped = {name for name, m in transformer.named_modules() if isinstance(m, stand_in_te.Linear)}
    assert swapped and swapped <= blocks_before, "only block linears are swapped"
    # The AdaLN modulation linears see one row per image; TE's FP8 GEMMs need multiples of 8.
    assert not any(".norm" in name for name in swapped) and any(".norm" in name for name in blocks_before)
    assert not any(isinstance(m, stand_in_te.Linear) for name, m in transformer.named_modules()
                   if not name.startswith(("transformer_blocks.", "single_transformer_blocks."))), "embedders stay"
    result = generate_with(tiny_model, scenario, call_contexts=[component.call_context(tiny_model.pipe)])
    (enabled, recipe), = stand_in_te.entered
    assert enabled and type(recipe).__name__ == "Float8CurrentScaling" and recipe.fp8_format == "E4M3"
    # The stand-in does plain linear math: the same output proves the weights and biases were copied.
    np.testing.assert_allclose(result.latents, reference.latents, rtol=1e-5, atol=1e-6)
    delayed = make_component("fp8-te:delayed")
    with delayed.call_context(tiny_model.pipe)():
        pass
    assert type(stand_in_te.entered[-1][1]).__name__ == "DelayedScaling" and stand_in_te.entered[-1][1].amax_history_len == 16


def test_fp8_te_refuses_the_compiled_stacks_and_an_unknown_recipe():
    from flux_perf.components import ComponentError
    from flux_perf.components.stacks import parse_stack

    with pytest.raises(ComponentError, match="fp8-te cannot be combined with compile-regional"):
        parse_stack("fp8-te+compile-regional")
    with pytest.raises(ComponentError, match="fp8-te:hybrid: unknown option; choose one of current, delayed"):
        make_component("fp8-te:hybrid")
