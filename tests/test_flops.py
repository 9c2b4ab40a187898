import pytest

from flux_perf.instrument.flops import measure_matmul_peaks, scenario_tokens, step_flops_breakdown, transformer_step_flops
from flux_perf.model.models import FULL

TEXT = 512


def test_kontext_token_counts():
    assert scenario_tokens(1024, 1024, 8) == 8192  # 4096 latent + 4096 reference
    assert scenario_tokens(512, 512, 8) + TEXT == 2560
    assert scenario_tokens(512, 768, 8, with_reference=False) == 32 * 48


@pytest.mark.parametrize("side, expected_tflop", [(512, 37.7), (1024, 165.7)])
def test_step_flops_match_the_hand_count(side, expected_tflop):
    flops = transformer_step_flops(FULL.transformer, scenario_tokens(side, side, 8), TEXT)
    assert flops / 1e12 == pytest.approx(expected_tflop, rel=0.01)


def test_breakdown_scales_as_expected():
    small = step_flops_breakdown(FULL.transformer, 4096, TEXT)
    large = step_flops_breakdown(FULL.transformer, 8192, TEXT)
    assert large.linear / small.linear == pytest.approx(8704 / 4608, rel=0.01)  # linear in tokens
    assert large.attention / small.attention == pytest.approx((8704 / 4608) ** 2, rel=0.001)  # quadratic


def test_no_ceilings_without_a_gpu():
    peaks = measure_matmul_peaks("cpu")
    assert peaks.bf16_tflops is None and peaks.fp8_tflops is None
