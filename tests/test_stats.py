"""Statistics and verdicts on synthetic samples: clear pass, clear fail, inconclusive."""

import pytest

from flux_perf.budgets import LatencyBudget
from flux_perf.stats import Change, Verdict, compare_samples, gate, latency_verdict, median_ci, summarize


def test_median_interval_uses_order_statistics():
    data = list(range(1, 11))  # n = 10: [x(2), x(9)] covers 97.9 %
    low, high, level = median_ci(data, 0.95)
    assert (low, high) == (2, 9) and level == pytest.approx(0.9785, abs=1e-3)
    low, high, level = median_ci([1, 2, 3], 0.95)  # too few for 95 %: the range, and its real coverage
    assert (low, high) == (1, 3) and level == pytest.approx(0.75)


def test_summary_figures():
    summary = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert summary.median == 3.0 and summary.minimum == 1.0 and summary.maximum == 100.0
    assert summary.q1 == 2.0 and summary.q3 == 4.0 and summary.iqr == 2.0
    with pytest.raises(ValueError, match="zero samples"):
        summarize([])


@pytest.mark.parametrize("samples, budget, verdict", [
    ([0.40, 0.41, 0.40, 0.42, 0.41, 0.40, 0.41], 0.50, Verdict.PASS),
    ([0.60, 0.61, 0.62, 0.60, 0.61, 0.60, 0.61], 0.50, Verdict.FAIL),
    ([0.45, 0.52, 0.48, 0.55, 0.47, 0.53, 0.49], 0.50, Verdict.INCONCLUSIVE),
    ([0.45], None, Verdict.NO_BUDGET),
])
def test_gate(samples, budget, verdict):
    assert gate(summarize(samples), budget) is verdict


@pytest.mark.parametrize("head_scale, change", [(1.10, Change.SLOWER), (0.90, Change.FASTER), (1.0, Change.SAME)])
def test_compare_clear_cases(head_scale, change):
    base = [1.000, 1.002, 0.998, 1.001, 0.999, 1.000, 1.003]
    assert compare_samples(base, [x * head_scale for x in base], tolerance=0.03).change is change


def test_compare_noisy_is_inconclusive_and_deterministic():
    base = [1.0, 1.2, 0.9, 1.1, 1.05]
    head = [1.1, 0.95, 1.25, 1.0, 1.15]
    first = compare_samples(base, head)
    assert first.change is Change.INCONCLUSIVE
    assert compare_samples(base, head) == first  # fixed bootstrap seed


def test_relative_budget_uses_the_recorded_rounds():
    recorded = (3.20, 3.21, 3.22, 3.20, 3.21)
    budget = LatencyBudget(3.21 * 1.03, "relative", "recorded", 0.03, recorded)
    assert latency_verdict([3.21, 3.22, 3.20, 3.21, 3.21], budget) is Verdict.PASS
    assert latency_verdict([3.40, 3.41, 3.39, 3.40, 3.42], budget) is Verdict.FAIL  # +6 %
    absolute = LatencyBudget(1.2, "absolute", "budgets.toml")
    assert latency_verdict([1.8, 1.82, 1.81, 1.8, 1.83, 1.81], absolute) is Verdict.FAIL
    assert latency_verdict([1.8, 1.82, 1.81], absolute) is Verdict.INCONCLUSIVE  # 3 rounds: 75 % coverage
    assert latency_verdict([1.0], None) is Verdict.NO_BUDGET
