"""No hidden state (issue 27): a component keeps what it learns on itself or on the pipeline, and its
`release` gives back what `apply` changed outside the pipeline (diffusers' borrowed dispatch slot and
default backend, module-level caches), so a case leaves every component module as it found it:
`Stack.release`, which the runner calls when a case is done."""

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flux_perf.components import REGISTRY, attention_fp8
from flux_perf.components.attention import AttentionBackend
from flux_perf.components.attention_fp8 import E4M3_MAX, CudnnFp8Attention, fp8_attention
from flux_perf.components.flash_attn3 import FlashAttn3
from flux_perf.components.flash_attn4 import FlashAttn4
from flux_perf.model.generate import generate_with
from flux_perf.model.scenarios import Scenario
from flux_perf.components.stacks import parse_stack

SCENARIO = Scenario(64, 64, 2)
CALIBRATION = "64x64@2-s1"  # small, for the tiny model


@pytest.fixture
def stand_in_kernel(monkeypatch):
    """cuDNN's FP8 attention done in float32 (the real one needs Hopper), using the module's constant
    cache as the real kernel does (emptied afterwards: calls outside a stack have no release);
    records each call's Q/K/V descales."""
    calls = []

    def kernel(q, k, v, descale_q, descale_k, descale_v, scale_o, output, attn_scale, softmax_scale):
        calls.append((descale_q.item(), descale_k.item(), descale_v.item()))
        attention_fp8._constant(1.0 / softmax_scale, q.device)
        q, k, v = (t.float() * d for t, d in ((q, descale_q), (k, descale_k), (v, descale_v)))
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=attn_scale)
        output.copy_((o.transpose(1, 2) * scale_o).clamp(-E4M3_MAX, E4M3_MAX).to(output.dtype))

    monkeypatch.setattr(attention_fp8, "cudnn_kernel", kernel)
    monkeypatch.setattr(attention_fp8, "CALIBRATION_SCENARIO", CALIBRATION)
    yield calls
    attention_fp8.clear_cudnn_caches()


def apply_stack(stack, model):
    stack.apply(model.pipe, calibrate=lambda scenario, contexts: generate_with(model, scenario, contexts))


def registry_state() -> dict:
    """diffusers' process-wide attention registry: each table's entries (by identity) and the default."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

    tables = {name: {slot: id(value) for slot, value in getattr(registry, name).items()}
              for name in ("_backends", "_supported_arg_names", "_constraints")}
    return {**tables, "_active_backend": registry._active_backend}


def module_globals() -> dict:
    """Every flux_perf.components module's globals: the object each name holds, and how many entries
    a container holds (a cache emptied again counts as unchanged, one still full does not)."""
    snapshot = {}
    for module_name, module in sorted(sys.modules.items()):
        if module_name.startswith("flux_perf.components") and module is not None:
            for name, value in vars(module).items():
                if not name.startswith("__"):
                    size = len(value) if isinstance(value, (dict, list, set)) else None
                    snapshot[f"{module_name}.{name}"] = (id(value), size)
    return snapshot


def test_a_static_fp8_stack_leaves_per_call_fp8_attention_as_it_was(tiny_model, stand_in_kernel):
    """Once a static stack had calibrated and run, per-call FP8 attention gave 0.947 relative error
    (the last layer's scales leaked through a module global). Now the scales live on the layers."""
    q, k = torch.randn(1, 256, 4, 64), torch.randn(1, 256, 4, 64)
    v = torch.randn(1, 256, 4, 64) * 30
    reference = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    before = fp8_attention(q, k, v)

    stack = parse_stack("attn-fp8:static")
    apply_stack(stack, tiny_model)
    stand_in_kernel.clear()
    generate_with(tiny_model, SCENARIO)
    transformer = tiny_model.pipe.transformer
    layers = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    assert len(stand_in_kernel) == layers * SCENARIO.steps, "the static stack attended in FP8"
    maxima = {tuple((m.fp8_qkv_amax / E4M3_MAX).tolist()) for m in transformer.modules() if hasattr(m, "fp8_qkv_amax")}
    assert all(any(np.allclose(call, m, rtol=1e-5) for m in maxima) for call in stand_in_kernel), \
        "on its layers' calibrated scales"

    during = fp8_attention(q, k, v)  # with the static stack live
    stack.release(tiny_model.pipe)
    after = fp8_attention(q, k, v)
    assert torch.equal(during, before) and torch.equal(after, before)
    assert float((after - reference).norm() / reference.norm()) < 0.1


def test_a_case_leaves_every_component_modules_globals_as_it_found_them(tiny_model, stand_in_kernel):
    pytest.importorskip("torchao.prototype.quantization.quant_api")
    stack = parse_stack(f"attn-fp8:static+fused-qkv+fp8-static:{CALIBRATION}+noise+slowdown")
    globals_before, registry_before = module_globals(), registry_state()

    apply_stack(stack, tiny_model)
    contexts = stack.call_contexts(tiny_model.pipe)
    for _ in range(2):
        generate_with(tiny_model, SCENARIO, contexts)
    assert stack.report()["slowdown"]["rows"] >= 16 and stack.report()["noise"]["steps_seen"] > 0
    changed = {name for name, value in module_globals().items() if globals_before.get(name) != value}
    assert changed == {"flux_perf.components.attention_fp8._constants"}, "the snapshot sees a filled cache"
    assert registry_state() != registry_before, "the slot is borrowed while the stack is live"

    stack.release(tiny_model.pipe)
    after = module_globals()
    assert {name for name in after if globals_before.get(name) != after[name]} == set()
    assert set(after) == set(globals_before)
    assert registry_state() == registry_before


@pytest.mark.parametrize("component_class", [CudnnFp8Attention, FlashAttn4, FlashAttn3])
def test_the_borrowed_dispatch_slot_is_given_back_on_release(tiny_model, component_class, monkeypatch):
    from diffusers.models.attention_dispatch import AttentionBackendName
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

    slot = AttentionBackendName[component_class.slot_name]
    tables = (registry._backends, registry._supported_arg_names, registry._constraints)
    held = [table[slot] for table in tables]
    component = component_class()
    component.release(tiny_model.pipe)  # never applied: nothing to give back
    component.apply(tiny_model.pipe)
    assert registry._backends[slot] is component_class.dispatch and registry._constraints[slot] == []
    component.release(tiny_model.pipe)
    assert all(table[slot] is value for table, value in zip(tables, held))
    component.release(tiny_model.pipe)  # twice: still what diffusers had
    assert all(table[slot] is value for table, value in zip(tables, held))

    for table in tables:  # a slot diffusers had not registered is unregistered again
        monkeypatch.delitem(table, slot)
    component.apply(tiny_model.pipe)
    component.release(tiny_model.pipe)
    assert all(slot not in table for table in tables)


def test_an_attention_backend_gives_back_diffusers_default_on_release(tiny_model):
    from diffusers.models.attention_dispatch import AttentionBackendName
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

    class MathAttention(AttentionBackend, register=False):
        name = "attn-math"
        summary = "test double: PyTorch's math SDPA"
        backend = "_native_math"

    found = registry._active_backend
    assert found != AttentionBackendName._NATIVE_MATH
    component = MathAttention()
    component.apply(tiny_model.pipe)
    assert registry._active_backend == AttentionBackendName._NATIVE_MATH, "set_attention_backend sets the default"
    component.release(tiny_model.pipe)
    assert registry._active_backend == found


def test_release_destroys_the_cudnn_handles_and_empties_the_caches(monkeypatch):
    destroyed = []
    monkeypatch.setitem(sys.modules, "cudnn", types.SimpleNamespace(destroy_handle=destroyed.append))
    attention_fp8._handles.update({"cuda:0": 11, "cuda:1": 12})
    attention_fp8._graphs[("shapes",)] = ("graph", {}, 11)
    attention_fp8._constants[(1.0, "cuda:0")] = torch.ones(1, 1, 1, 1)
    CudnnFp8Attention().release(None)
    assert sorted(destroyed) == [11, 12]
    assert not attention_fp8._handles and not attention_fp8._graphs and not attention_fp8._constants


def test_planted_noise_counts_each_scenario_afresh_and_release_frees_its_noise(tiny_model):
    stack = parse_stack("noise")
    noise = stack.components[0]
    apply_stack(stack, tiny_model)
    first = generate_with(tiny_model, SCENARIO)
    assert noise.report()["steps_seen"] == SCENARIO.steps
    stack.reset_reports()
    assert noise.report()["steps_seen"] == 0
    generate_with(tiny_model, SCENARIO)
    assert noise.report()["steps_seen"] == SCENARIO.steps, "a new scenario counts from zero"
    assert noise.noise
    noise.release(tiny_model.pipe)
    assert not noise.noise
    again = generate_with(tiny_model, SCENARIO)  # the noise is drawn again from its seed: only a cache
    np.testing.assert_array_equal(again.latents, first.latents)


def test_the_planted_slowdown_frees_its_buffers_on_release_and_keeps_its_report(tiny_model):
    stack = parse_stack("slowdown")
    slowdown = stack.components[0]
    apply_stack(stack, tiny_model)
    generate_with(tiny_model, SCENARIO)
    generate_with(tiny_model, SCENARIO)
    assert slowdown.buffers and slowdown.report()["rows"] >= 16
    stack.release(tiny_model.pipe)
    assert not slowdown.buffers
    assert slowdown.report()["rows"] >= 16, "what it measured is still reported"


def test_every_component_can_be_released_without_being_applied(tiny_model):
    for cls in REGISTRY.values():
        cls().release(tiny_model.pipe)
