"""FlashAttention-4 in diffusers' dispatch, proved on the CPU with a stand-in `flash_attn.cute`
that computes attention with PyTorch (the real kernels need Hopper): the routing, the custom op
torch.compile keeps in its graph, the capability and package checks, and which kernel
`attn-flash-attn` picks."""

import sys
import types

import numpy as np
import pytest
import torch
from helpers import assert_a_new_stack_leaves_the_kernel, attend_through, stand_in_flash_attn_func

from flux_perf.components import Capabilities
from flux_perf.components.attention import FlashAttn
from flux_perf.components.flash_attn4 import FlashAttn4, fa4_dispatch
from flux_perf.model.scenarios import Scenario

HOPPER = Capabilities("cuda", (9, 0), "NVIDIA H100 80GB HBM3", 1)
AMPERE = Capabilities("cuda", (8, 0), "NVIDIA A100", 1)


@pytest.fixture
def stand_in_fa4(monkeypatch):
    """`flash_attn.cute.flash_attn_func` on (batch, tokens, heads, dim), returning (out, lse) like FA4."""
    calls = []

    package = types.ModuleType("flash_attn")
    package.__path__ = []
    cute = types.ModuleType("flash_attn.cute")
    cute.flash_attn_func = stand_in_flash_attn_func(calls, with_lse=True)
    package.cute = cute
    monkeypatch.setitem(sys.modules, "flash_attn", package)
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    return calls


def test_the_transformer_attends_through_fa4_and_gets_the_same_output(tiny_model, stand_in_fa4):
    scenario = Scenario(64, 64, 2)
    component = FlashAttn4()
    reference, routed, layers = attend_through(tiny_model, component, scenario)
    assert len(stand_in_fa4) >= layers * scenario.steps, "every attention call went to FA4"
    assert all(not causal and scale == pytest.approx(shape[-1] ** -0.5) for shape, scale, causal in stand_in_fa4)
    assert component.report() == {"kernel": "flash-attn-4", "attention_processors": layers}
    np.testing.assert_allclose(routed.latents, reference.latents, rtol=1e-4, atol=1e-5)
    assert_a_new_stack_leaves_the_kernel(tiny_model, stand_in_fa4, scenario)
    component.release(tiny_model.pipe)


def test_the_custom_op_stays_in_a_compiled_graph(stand_in_fa4):
    q, k, v = (torch.randn(1, 24, 2, 16) for _ in range(3))
    torch.library.opcheck(torch.ops.flux_perf.flash_attn_4.default, (q, k, v, 0.25))
    compiled = torch.compile(lambda q, k, v: fa4_dispatch(q, k, v) * 2, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(q, k, v), 2 * fa4_dispatch(q, k, v))  # fullgraph: no graph break
    with pytest.raises(ValueError, match="no mask, causal"):
        fa4_dispatch(q, k, v, is_causal=True)


@pytest.mark.parametrize("installed, caps, kernel", [
    ({"flash_attn.cute"}, HOPPER, "fa4"),
    ({"flash_attn_interface", "flash_attn.cute"}, HOPPER, "fa3"),
    ({"flash_attn.flash_attn_interface", "flash_attn.cute"}, HOPPER, "fa4"),
    ({"flash_attn.flash_attn_interface"}, AMPERE, "fa2"),
    ({"flash_attn.cute"}, AMPERE, None),  # FA4 is for Hopper and newer
    (set(), HOPPER, None),
])
def test_attn_flash_attn_picks_the_best_installed_kernel(monkeypatch, installed, caps, kernel):
    monkeypatch.setattr(Capabilities, "has_package", staticmethod(lambda name: name in installed))
    assert FlashAttn.pick(caps) == kernel
    reason = FlashAttn().unmet(caps)
    assert (reason is None) == (kernel is not None)
    if kernel is None:
        assert "pip install flash-attn-4" in reason
