"""`flux-perf account`: a step's GPU time by kernel family, from a torch.profiler trace."""

import json

import pytest
from helpers import run_flux_perf

from flux_perf.report.account import AccountError, account, family_of
from flux_perf.model.models import resolve_model_source
from flux_perf.instrument.runner import CaseRunner
from flux_perf.model.scenarios import Scenario
from flux_perf.components.stacks import parse_stack


def _kernel(name, ts, dur, cat="kernel"):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": 7}


# Two denoising steps in one 2000 us range, as torch.profiler writes them for --flux-profile.
TRACE = {"traceEvents": [
    {"ph": "X", "cat": "gpu_user_annotation", "name": "denoise", "ts": 1000, "dur": 2000, "pid": 0, "tid": 7},
    _kernel("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTT", 1000, 800),
    _kernel("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7", 1850, 400),
    _kernel("triton_red_fused_abs_amax_clamp_0", 2300, 100),
    _kernel("triton_per_fused_native_layer_norm_1", 2400, 100),
    _kernel("Memcpy DtoD (Device -> Device)", 2550, 50, cat="gpu_memcpy"),
    _kernel("my_new_kernel", 2700, 50),
    _kernel("triton_poi_fused_gelu_2", 900, 50),  # before the range: decode or encode, not a step
]}


def test_families_gaps_and_throughput_of_a_step():
    flops = {"linear": 400e9, "attention": 100e9}  # per step
    result = account(TRACE, steps=2, flops=flops, ceilings={"bf16_tflops": 800.0, "fp8_tflops": 1600.0})
    ms = {name: result.per_step_ms(f.us) for name, f in result.families.items() if f.us}
    assert ms == {"gemm": 0.4, "attention": 0.2, "activation quantization": 0.05, "norms": 0.05, "copies": 0.025,
                  "other": 0.025}
    assert result.per_step_ms(result.window_us) == 1.0
    assert result.per_step_ms(result.gaps_us) == pytest.approx(0.25)  # 2000 - 1500 us busy, over 2 steps
    tflops, share = result.reached("gemm")
    assert tflops == pytest.approx(1000) and share == pytest.approx(125)  # 400 GFLOP in 0.4 ms
    assert result.reached("attention")[0] == pytest.approx(500)
    assert result.largest[-1][0] == "my_new_kernel", "an unnamed kernel is listed, never hidden"


def test_fp8_attention_is_judged_against_the_fp8_ceiling():
    fp8_trace = {"traceEvents": [
        {"ph": "X", "cat": "gpu_user_annotation", "name": "denoise", "ts": 0, "dur": 1000, "pid": 0, "tid": 7},
        _kernel("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f8_knob_32_64x256x128", 0, 500),
    ]}
    ceilings = {"bf16_tflops": 800.0, "fp8_tflops": 1600.0}
    result = account(fp8_trace, steps=1, flops={"linear": 0.0, "attention": 400e9}, ceilings=ceilings)
    assert result.reached("attention") == pytest.approx((800.0, 50.0))  # not 100 % of the bf16 ceiling
    bf16 = account(TRACE, steps=2, flops={"linear": 0.0, "attention": 100e9}, ceilings=ceilings)
    assert bf16.reached("attention")[1] == pytest.approx(500 / 800 * 100)


def test_a_step_is_set_against_its_floor_at_its_own_precisions():
    flops = {"linear": 400e9, "attention": 100e9}  # per step
    datasheet = {"bf16_tflops": 1000.0, "fp8_tflops": 2000.0}
    result = account(TRACE, steps=2, flops=flops, ceilings={"bf16_tflops": 800.0, "fp8_tflops": 1600.0},
                     datasheet=datasheet)
    assert result.precisions() == ("bf16", "bf16")
    # 500 GFLOP at 1000 TFLOP/s: 0.5 ms; at the measured 800: 0.625 ms; the step takes 1.0 ms
    assert result.floors_ms() == pytest.approx({"datasheet peak": 0.5, "measured ceiling": 0.625})
    fp8 = {"traceEvents": [
        {"ph": "X", "cat": "gpu_user_annotation", "name": "denoise", "ts": 0, "dur": 1000, "pid": 0, "tid": 7},
        _kernel("sm90_xmma_gemm_e4m3e4m3_bf16f32_f32_tn_n_tilesize128x128x128", 0, 600),
        _kernel("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f8_knob_32_64x256x128", 600, 300),
    ]}
    result = account(fp8, steps=1, flops=flops, ceilings=None, datasheet=datasheet)
    assert result.precisions() == ("fp8", "fp8")
    assert result.floors_ms() == pytest.approx({"datasheet peak": 0.25})  # no measured ceilings: that floor is left out
    assert account(fp8, steps=1, flops=None, datasheet=datasheet).floors_ms() == {}


@pytest.mark.parametrize("name, family", [
    ("sm90_xmma_gemm_e4m3e4m3_bf16f32_f32_tn_n_tilesize128x128x128", "fp8 gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "gemm"),
    ("flash_fwd_kernel", "attention"),
    ("triton_poi_fused_mul_add_3", "elementwise (RoPE, modulation, residuals)"),
    # Seen in `fast` on the H100: inductor names a kernel after the GEMM or attention it feeds.
    ("nvjet_sm90_qqtst_128x128_128x6_1x2_h_bz_ovscale_bias_TNT", "fp8 gemm"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f8_knob_32_64x256x128_4x1x1_cga1x1", "attention"),
    ("triton_red_fused__scaled_mm__to_copy__unsafe_view_abs_amax_cat_clamp_clone_div_gelu_permute_t_1",
     "activation quantization"),
    ("triton_red_fused__fused_rms_norm__scaled_dot_product_cudnn_attention__to_copy_add_clone_mul_2", "norms"),
    ("triton_poi_fused__scaled_dot_product_cudnn_attention__to_copy_add_cat_clone_mul_neg_permute_3",
     "elementwise (RoPE, modulation, residuals)"),
    ("triton_poi_fused_add_cat_mul_split_unsqueeze_view_5", "elementwise (RoPE, modulation, residuals)"),
    ("triton_tem_fused__scaled_mm_4", "fp8 gemm"),
])
def test_kernel_names_map_to_families(name, family):
    assert family_of(name) == family


def test_account_command_reads_a_trace_and_refuses_a_cpu_one(tmp_path):
    (tmp_path / "profiles").mkdir()
    trace = tmp_path / "profiles" / "fast-512x512@6.json"
    trace.write_text(json.dumps(TRACE))
    result = run_flux_perf("account", str(trace), "--json", str(tmp_path / "account.json"))
    assert result.returncode == 0, result.stderr
    assert "results.json: times are per denoising range, without FLOPs" in result.stdout  # none beside the trace
    assert json.loads((tmp_path / "account.json").read_text())["families"]["gemm"]["ms_per_step"] == 0.8
    # A trace of a CPU run holds no kernels: said plainly.
    cpu_trace = tmp_path / "cpu.json"
    CaseRunner(resolve_model_source("tiny", "cpu"), "cpu").profile(parse_stack("bf16"), Scenario(64, 64, 2), cpu_trace)
    with pytest.raises(AccountError, match="no GPU kernels"):
        account(json.loads(cpu_trace.read_text()))
    result = run_flux_perf("account", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "cannot read a chrome trace" in result.stderr
