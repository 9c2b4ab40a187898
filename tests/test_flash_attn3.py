"""FlashAttention-3 in diffusers' dispatch, proved on the CPU with a stand-in `fa3_fwd_interface`
(the fa3-fwd wheel's module) that computes attention with PyTorch: the routing, the custom op
torch.compile keeps in its graph, which FA3 build it takes, and what it says when none is there."""

import sys
import types

import numpy as np
import pytest
import torch
from helpers import assert_a_new_stack_leaves_the_kernel, attend_through, stand_in_flash_attn_func

from flux_perf.components import Capabilities
from flux_perf.components.attention import FlashAttn
from flux_perf.components.flash_attn3 import FlashAttn3, fa3_dispatch, installed_module
from flux_perf.model.scenarios import Scenario

HOPPER = Capabilities("cuda", (9, 0), "NVIDIA H100 80GB HBM3", 1)


@pytest.fixture
def stand_in_fa3(monkeypatch):
    """`fa3_fwd_interface.flash_attn_func` on (batch, tokens, heads, dim), returning the output alone."""
    calls = []

    module = types.ModuleType("fa3_fwd_interface")
    module.flash_attn_func = stand_in_flash_attn_func(calls)
    module.__spec__ = types.SimpleNamespace(name="fa3_fwd_interface")
    monkeypatch.setitem(sys.modules, "fa3_fwd_interface", module)
    monkeypatch.delitem(sys.modules, "flash_attn_interface", raising=False)
    return calls


def test_the_transformer_attends_through_fa3_and_gets_the_same_output(tiny_model, stand_in_fa3, monkeypatch):
    monkeypatch.setattr("flux_perf.components.flash_attn3.installed_module", lambda: "fa3_fwd_interface")
    scenario = Scenario(64, 64, 2)
    component = FlashAttn3()
    try:
        reference, routed, layers = attend_through(tiny_model, component, scenario)
        assert len(stand_in_fa3) >= layers * scenario.steps, "every attention call went to FA3"
        assert all(not causal and scale == pytest.approx(shape[-1] ** -0.5) for shape, scale, causal in stand_in_fa3)
        assert component.report() == {"kernel": "flashattention-3", "attention_processors": layers,
                                      "module": "fa3_fwd_interface"}
        np.testing.assert_allclose(routed.latents, reference.latents, rtol=1e-4, atol=1e-5)
        assert_a_new_stack_leaves_the_kernel(tiny_model, stand_in_fa3, scenario)
    finally:
        component.release(tiny_model.pipe)  # the borrowed slot goes back even when an assertion fails


def test_the_custom_op_stays_in_a_compiled_graph(stand_in_fa3, monkeypatch):
    monkeypatch.setattr("flux_perf.components.flash_attn3.installed_module", lambda: "fa3_fwd_interface")
    q, k, v = (torch.randn(1, 24, 2, 16) for _ in range(3))
    torch.library.opcheck(torch.ops.flux_perf.flash_attn_3.default, (q, k, v, 0.25))
    compiled = torch.compile(lambda q, k, v: fa3_dispatch(q, k, v) * 2, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(q, k, v), 2 * fa3_dispatch(q, k, v))  # fullgraph: no graph break
    with pytest.raises(ValueError, match="no mask, causal"):
        fa3_dispatch(q, k, v, is_causal=True)


@pytest.mark.parametrize("installed, unmet", [
    ({"fa3_fwd_interface"}, None),
    ({"flash_attn_interface"}, None),
    (set(), "pip install fa3-fwd"),
])
def test_either_fa3_build_serves_it_and_none_is_named(monkeypatch, installed, unmet):
    monkeypatch.setattr(Capabilities, "has_package", staticmethod(lambda name: name in installed))
    reason = FlashAttn3().unmet(HOPPER)
    assert reason is None if unmet is None else unmet in reason
    # attn-flash-attn takes FA3 from either build on Hopper
    assert (FlashAttn.pick(HOPPER) == "fa3") == bool(installed)


def test_installed_module_prefers_the_source_build(monkeypatch):
    import importlib.util

    found = {"flash_attn_interface", "fa3_fwd_interface"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in found else None)
    assert installed_module() == "flash_attn_interface"
    found.discard("flash_attn_interface")
    assert installed_module() == "fa3_fwd_interface"
    found.clear()
    assert installed_module() is None
