"""FP8 attention (`attn-fp8`) proved on the CPU: the per-tensor quantization, the output scale,
the routing through diffusers' dispatch and the custom op torch.compile keeps in its graph. The
cuDNN kernel itself needs Hopper; here a stand-in does what it does (dequantize, attend in float32,
quantize the output with scale_o), and tests/h100/test_attention_kernels_gpu.py runs the real one."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_a_new_stack_leaves_the_kernel, attend_through

from flux_perf.components import attention_fp8
from flux_perf.components.attention_fp8 import E4M3_MAX, CudnnFp8Attention, fp8_attention, quantize_e4m3
from flux_perf.model.generate import generate_with
from flux_perf.model.scenarios import Scenario
from flux_perf.components.stacks import StackError, parse_stack


@pytest.fixture
def stand_in_kernel(monkeypatch):
    calls = []

    def kernel(q, k, v, descale_q, descale_k, descale_v, scale_o, output, attn_scale, softmax_scale):
        calls.append((tuple(q.shape), attn_scale))
        q, k, v = (t.float() * d for t, d in ((q, descale_q), (k, descale_k), (v, descale_v)))
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=attn_scale)
        scaled = o.transpose(1, 2) * scale_o
        calls[-1] += (scaled.abs().max().item(),)
        output.copy_(scaled.clamp(-E4M3_MAX, E4M3_MAX).to(output.dtype))

    monkeypatch.setattr(attention_fp8, "cudnn_kernel", kernel)
    return calls


def _relative(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_per_tensor_quantization_uses_the_whole_e4m3_range():
    x = torch.randn(1, 300, 4, 32) * 7
    q8, descale = quantize_e4m3(x)
    assert q8.dtype == torch.float8_e4m3fn and descale.shape == (1, 1, 1, 1)
    assert q8.float().abs().max() == E4M3_MAX  # the largest value lands on e4m3's largest
    assert descale.item() == pytest.approx(x.abs().max().item() / E4M3_MAX)
    assert _relative(q8.float() * descale, x) < 0.04  # 3 mantissa bits


def test_the_output_scale_of_v_never_saturates_and_attention_stays_close(stand_in_kernel):
    q, k = torch.randn(1, 256, 4, 64), torch.randn(1, 256, 4, 64)
    v = torch.randn(1, 256, 4, 64) * 30
    v[0, 7, 2, 5] = 400.0  # one large value: it sets V's scale, and bounds every output
    out = fp8_attention(q, k, v)
    reference = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    (_, attn_scale, largest), = stand_in_kernel
    assert attn_scale == pytest.approx(64 ** -0.5)
    assert largest <= E4M3_MAX * (1 + 1e-3), "|O| <= max|V| keeps the output inside e4m3"
    assert out.dtype == q.dtype and out.shape == reference.shape
    assert _relative(out, reference) < 0.1
    with pytest.raises(ValueError, match="no mask, causal"):
        fp8_attention(q, k, v, is_causal=True)


def test_the_transformer_attends_in_fp8_and_stays_near_bf16(tiny_model, stand_in_kernel):
    scenario = Scenario(64, 64, 2)
    component = CudnnFp8Attention()
    reference, routed, layers = attend_through(tiny_model, component, scenario)
    assert len(stand_in_kernel) >= layers * scenario.steps, "every attention call went to the FP8 kernel"
    assert component.report()["attention_processors"] == layers
    assert not np.array_equal(routed.latents, reference.latents), "FP8 is lossy: the output must move"
    assert not parse_stack("attn-fp8+compile-regional").lossless, "so the gate judges it as lossy"
    moved = np.linalg.norm(routed.latents - reference.latents) / np.linalg.norm(reference.latents)
    assert moved < 0.05
    assert_a_new_stack_leaves_the_kernel(tiny_model, stand_in_kernel, scenario)
    component.release(tiny_model.pipe)


def test_the_custom_op_stays_in_a_compiled_graph(stand_in_kernel):
    q8, dq = quantize_e4m3(torch.randn(1, 24, 2, 16))
    args = (q8, q8.clone(), q8.clone(), dq, dq.clone(), dq.clone(), 1 / dq, 0.25, 256.0)
    # test_schema compares outputs with arithmetic CPU float8 lacks; the fake kernel and registration are checked
    torch.library.opcheck(torch.ops.flux_perf.cudnn_sdpa_fp8.default, args,
                          test_utils=("test_faketensor", "test_autograd_registration"))
    q, k, v = (torch.randn(1, 24, 2, 16) for _ in range(3))
    compiled = torch.compile(lambda q, k, v: fp8_attention(q, k, v) * 2, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(q, k, v), 2 * fp8_attention(q, k, v))  # fullgraph: no graph break


def test_static_scales_are_each_layers_calibrated_maxima_and_compile_once_for_all_blocks(
        tiny_source, stand_in_kernel, monkeypatch):
    from torch._dynamo.utils import counters

    from flux_perf.components.compile import RegionalCompile
    from flux_perf.instrument.runner import CaseRunner

    monkeypatch.setattr(attention_fp8, "CALIBRATION_SCENARIO", "64x64@2-s1")  # small, for the tiny model
    # The graphs are dynamo's (one per block class, or one per layer if the scales were constants):
    # the eager backend counts them the same, without inductor's C++ builds (46 s on a cold cache, 7 s now).
    inductor_kwargs = RegionalCompile.compile_kwargs
    monkeypatch.setattr(RegionalCompile, "compile_kwargs", lambda self: {**inductor_kwargs(self), "backend": "eager"})
    descales = []
    kernel = attention_fp8.cudnn_kernel
    monkeypatch.setattr(attention_fp8, "cudnn_kernel",
                        lambda q, k, v, dq, dk, dv, *rest: (descales.append((dq.item(), dk.item(), dv.item())),
                                                            kernel(q, k, v, dq, dk, dv, *rest)))
    runner = CaseRunner(tiny_source, "cpu")
    counters.clear()
    dynamic = runner.case(parse_stack("attn-fp8+compile-regional"), Scenario(64, 64, 2)).round()
    graphs_dynamic = counters["stats"]["unique_graphs"]
    counters.clear()
    case = runner.case(parse_stack("attn-fp8:static+compile-regional"), Scenario(64, 64, 2))
    transformer = case.prepared.model.pipe.transformer
    maxima = [m.fp8_qkv_amax for m in transformer.modules() if hasattr(m, attention_fp8.AMAX_BUFFER)]
    layers = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    assert len(maxima) == layers and all(bool((m > 0).all()) for m in maxima)
    descales.clear()
    static = case.round()
    # Every call ran on one of the calibrated layers' fixed scales, not on its own amax.
    calibrated = {tuple((m / E4M3_MAX).tolist()) for m in maxima}
    assert len(descales) == layers * 2 and all(
        any(np.allclose(d, c, rtol=1e-5) for c in calibrated) for d in descales)
    # The buffers are graph inputs: no graph per layer, as many graphs as with per-call scales.
    assert counters["stats"]["unique_graphs"] == graphs_dynamic
    assert not np.array_equal(static.latents, dynamic.latents)
    moved = np.linalg.norm(static.latents - dynamic.latents) / np.linalg.norm(dynamic.latents)
    assert moved < 0.02, f"calibrated scales stay close to per-call ones on the tiny model; moved {moved:.2e}"


def test_static_processors_attend_on_their_layers_scales_until_a_new_stack_sets_another_backend(
        tiny_model, stand_in_kernel, monkeypatch):
    monkeypatch.setattr(attention_fp8, "CALIBRATION_SCENARIO", "64x64@2-s1")
    scenario = Scenario(64, 64, 2)
    dynamic = parse_stack("attn-fp8")
    dynamic.apply(tiny_model.pipe)
    per_call = generate_with(tiny_model, scenario)
    static_stack = parse_stack("attn-fp8:static")
    static_stack.apply(tiny_model.pipe, lambda s, contexts: generate_with(tiny_model, s, contexts))
    stand_in_kernel.clear()
    static = generate_with(tiny_model, scenario)
    transformer = tiny_model.pipe.transformer
    assert len(stand_in_kernel) == (len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)) \
        * scenario.steps, "every attention call went to the FP8 kernel"
    assert not np.array_equal(static.latents, per_call.latents), "on the calibrated scales, not per-call ones"
    moved = np.linalg.norm(static.latents - per_call.latents) / np.linalg.norm(per_call.latents)
    assert moved < 0.02
    assert_a_new_stack_leaves_the_kernel(tiny_model, stand_in_kernel, scenario)
    for stack in (static_stack, dynamic):  # the slot back to diffusers' own, latest borrower first
        stack.components[0].release(tiny_model.pipe)


@pytest.mark.parametrize("fused_qkv", [False, True])
def test_the_static_processor_computes_what_fluxs_own_processor_does(tiny_model, stand_in_kernel, fused_qkv):
    """The static processor repeats FluxAttnProcessor.__call__'s body (diffusers 0.42) around its own
    attention call. While observing it quantizes each tensor on its own maximum, as the dispatch
    slot does: the same latents, bit for bit, prove the copied body faithful."""
    scenario = Scenario(64, 64, 2)
    if fused_qkv:
        tiny_model.pipe.transformer.fuse_qkv_projections()
    per_call = CudnnFp8Attention()
    per_call.apply(tiny_model.pipe)
    through_fluxs_processor = generate_with(tiny_model, scenario)
    observing = CudnnFp8Attention("static")
    observing.apply(tiny_model.pipe)  # no calibration: its processors stay in observing mode
    through_static_processor = generate_with(tiny_model, scenario)
    np.testing.assert_array_equal(through_static_processor.latents, through_fluxs_processor.latents)
    maxima = [m.fp8_qkv_amax for m in tiny_model.pipe.transformer.modules() if hasattr(m, "fp8_qkv_amax")]
    assert maxima and all(bool((m > 0).all()) for m in maxima), "and it observed every layer"
    observing.release(tiny_model.pipe)
    per_call.release(tiny_model.pipe)


def test_rope_halves_on_the_static_processor_gives_its_output(tiny_model, stand_in_kernel):
    """attn-fp8:static's processor (applied first, in the attention phase) rotates halves once
    rope-halves permuted Q and K: per-tensor scales do not see the order, so the output stays."""
    from test_rope_halves_split_proj_out import randomize_qk_norms

    from flux_perf.components import make_component
    from flux_perf.components.attention_fp8 import layer_scales_processor_class

    scenario = Scenario(64, 64, 2)
    randomize_qk_norms(tiny_model.pipe.transformer)
    observing = CudnnFp8Attention("static")
    observing.apply(tiny_model.pipe)  # no calibration: each call quantizes on its tensors' own maxima
    reference = generate_with(tiny_model, scenario)
    make_component("rope-halves").apply(tiny_model.pipe)
    processors = [m.processor for m in tiny_model.pipe.transformer.modules() if hasattr(m, "fp8_qkv_amax")]
    assert processors and all(type(p) is layer_scales_processor_class() and p.rope_halves for p in processors)
    halves = generate_with(tiny_model, scenario)
    # FP8 quantization absorbs the reordered float sums: on the tiny model the latents come out identical
    assert np.linalg.norm(halves.latents - reference.latents) <= 1e-4 * np.linalg.norm(reference.latents)
    observing.release(tiny_model.pipe)


def test_static_scales_need_the_calibration_run(tiny_model):
    with pytest.raises(StackError, match="attn-fp8:static calibrates on one generation"):
        parse_stack("attn-fp8:static").apply(tiny_model.pipe)


@pytest.mark.parametrize("linear_calibration, generations", [("64x64@2-s1", 1), ("96x64@2-s2", 2)])
def test_one_calibration_generation_serves_every_component_that_asks_for_the_same_scenario(
        tiny_model, stand_in_kernel, monkeypatch, linear_calibration, generations):
    pytest.importorskip("torchao.prototype.quantization.quant_api")
    monkeypatch.setattr(attention_fp8, "CALIBRATION_SCENARIO", "64x64@2-s1")
    stack = parse_stack(f"attn-fp8:static+fp8-static:{linear_calibration}+compile-regional")
    ran = []

    def calibrate(scenario, contexts):
        transformer = tiny_model.pipe.transformer
        # Calibration sees the stack before compile, with the observers of both components in place.
        assert transformer.transformer_blocks[0]._compiled_call_impl is None
        assert type(transformer.transformer_blocks[0].ff.net[2]).__name__ == "Float8ObservedLinear"
        ran.append(scenario.id)
        generate_with(tiny_model, scenario, contexts)

    stack.apply(tiny_model.pipe, calibrate)
    assert len(ran) == generations == len(set(ran))
    report = stack.report()
    assert report[f"fp8-static:{linear_calibration}"]["calibrated_linears"] > 0
    maxima = [m.fp8_qkv_amax for m in tiny_model.pipe.transformer.modules() if hasattr(m, "fp8_qkv_amax")]
    assert maxima and all(bool((m > 0).all()) for m in maxima), "the attention observed in the same generation"
    assert tiny_model.pipe.transformer.transformer_blocks[0]._compiled_call_impl is not None
    for component in reversed(stack.components):
        component.release(tiny_model.pipe)
