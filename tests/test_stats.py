"""The statistics, checked against scipy's exact tests: an interval off by one rank fails here."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from flux_perf.gate.stats import (
    Change,
    RatioInterval,
    change_of,
    holm,
    look_confidence,
    paired_p_slower,
    paired_ratio,
    rank_sum_cdf,
    signed_rank_cdf,
    two_sample_p_slower,
    two_sample_ratio,
)
from flux_perf.instrument.rounds import median_ci, summarize


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


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_signed_rank_distribution_is_the_enumerated_one(n):
    sums = [sum(r + 1 for r, sign in enumerate(signs) if sign) for signs in itertools.product((0, 1), repeat=n)]
    counts = np.bincount(sums, minlength=n * (n + 1) // 2 + 1)
    assert np.array_equal(np.cumsum(counts) / 2**n, signed_rank_cdf(n))


@pytest.mark.parametrize("n, m", [(1, 4), (3, 5), (6, 6), (7, 4)])
def test_rank_sum_distribution_is_the_enumerated_one(n, m):
    u = [sum(y > x for x in first for y in set(range(n + m)) - set(first))
         for first in itertools.combinations(range(n + m), n)]
    counts = np.bincount(u, minlength=n * m + 1)
    assert np.allclose(np.cumsum(counts) / math.comb(n + m, n), rank_sum_cdf(n, m), rtol=0, atol=1e-15)


def _inside(p_value: float, confidence: float) -> bool:
    return p_value > 1 - confidence


@pytest.mark.parametrize("seed", range(40))
def test_paired_interval_is_the_exact_wilcoxon_test_inverted(seed):
    """Just inside each end the exact two-sided test keeps the ratio; just outside it rejects it.
    An interval one Walsh average too narrow or too wide fails one of the four checks."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 16))  # 8 pairs: the fewest with a 99 % interval (1/256 <= 0.005)
    base = np.exp(rng.normal(0, 0.02, n))
    head = base * np.exp(rng.normal(0.01, 0.02, n))
    for confidence in (0.95, 0.99):
        interval = paired_ratio(base, head, confidence)
        assert interval.reached
        logs = np.log(head) - np.log(base)
        for end, step in ((interval.low, -1), (interval.high, 1)):
            outside = scipy.stats.wilcoxon(logs - (math.log(end) + step * 1e-9), method="exact").pvalue
            inside = scipy.stats.wilcoxon(logs - (math.log(end) - step * 1e-9), method="exact").pvalue
            assert not _inside(outside, confidence) and _inside(inside, confidence), (n, confidence, end)


def _two_samples(seed: int, fewest: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """(reference, samples) of fewest-13 rounds each, the samples 2 % slower, log-normal spread."""
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(fewest, 14)), int(rng.integers(fewest, 14))
    return np.exp(rng.normal(0, spread, m)), np.exp(rng.normal(0.02, spread, n))


@pytest.mark.parametrize("seed", range(40))
def test_two_sample_interval_is_the_exact_mann_whitney_test_inverted(seed):
    reference, samples = _two_samples(100 + seed, 4, 0.02)
    n, m = len(samples), len(reference)
    for confidence in (0.95, 0.99):
        interval = two_sample_ratio(reference, samples, confidence)
        assert interval.reached, (n, m, confidence)  # 4 rounds a side reach 99 %: every draw is checked
        for end, step in ((interval.low, -1), (interval.high, 1)):
            def p(shift):
                return scipy.stats.mannwhitneyu(np.log(samples) - shift, np.log(reference), method="exact").pvalue
            assert not _inside(p(math.log(end) + step * 1e-9), confidence)
            assert _inside(p(math.log(end) - step * 1e-9), confidence), (n, m, confidence, end)


def test_too_few_rounds_for_the_level_say_so():
    # 5 pairs: P(T <= 0) = 1/32 > 0.025, no 95 % interval exists; 6 pairs: 1/64, one does.
    assert not paired_ratio([1.0] * 5, [1.1, 1.2, 1.3, 1.4, 1.5]).reached
    assert paired_ratio([1.0] * 6, [1.1, 1.2, 1.3, 1.4, 1.5, 1.6]).reached
    assert not two_sample_ratio([1.0, 1.01], [1.1, 1.2]).reached  # 1/6 of arrangements: none at 95 %
    assert change_of(RatioInterval(1.5, 1.1, 1.6, 0.95, reached=False), 0.01) is Change.INCONCLUSIVE


@pytest.mark.parametrize("seed", range(20))
def test_two_sample_one_sided_p_matches_scipy_and_the_interval(seed):
    reference, samples = _two_samples(300 + seed, 3, 0.01)
    for threshold in (1.0, 1.01, 1.02, 1.04):
        shifted = np.log(samples) - math.log(threshold)
        expected = scipy.stats.mannwhitneyu(shifted, np.log(reference), method="exact", alternative="greater").pvalue
        assert two_sample_p_slower(reference, samples, threshold) == pytest.approx(expected, abs=1e-12)
        interval = two_sample_ratio(reference, samples)
        assert (two_sample_p_slower(reference, samples, threshold) <= 0.025) == (interval.reached and
                                                                                interval.low > threshold)


def test_one_sided_p_matches_scipy_and_the_interval():
    rng = np.random.default_rng(7)
    base = np.exp(rng.normal(0, 0.01, 12))
    head = base * 1.03 * np.exp(rng.normal(0, 0.01, 12))
    for threshold in (1.0, 1.01, 1.03, 1.05):
        logs = np.log(head) - np.log(base) - math.log(threshold)
        expected = scipy.stats.wilcoxon(logs, method="exact", alternative="greater").pvalue
        assert paired_p_slower(base, head, threshold) == pytest.approx(expected, abs=1e-12)
        # below alpha/2 exactly when the interval at 1 - alpha lies above the threshold
        assert (paired_p_slower(base, head, threshold) <= 0.025) == (paired_ratio(base, head).low > threshold)


def test_holm_steps_down_and_stops():
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]  # 0.01 <= 0.05/3; 0.03 > 0.05/2
    assert holm([0.01, 0.02, 0.04], 0.05) == [True, True, True]  # 0.01, 0.02 <= 0.025, 0.04 <= 0.05
    assert holm([0.2], 0.05) == [False] and holm([], 0.05) == []


def test_changes_of_an_interval():
    def interval(low, high):
        return RatioInterval((low + high) / 2, low, high, 0.95)

    assert change_of(interval(1.02, 1.04), 0.01) is Change.SLOWER
    assert change_of(interval(0.90, 0.95), 0.01) is Change.FASTER
    assert change_of(interval(0.995, 1.005), 0.01) is Change.SAME
    assert change_of(interval(0.995, 1.02), 0.01) is Change.INCONCLUSIVE
    # One-sided: an interval that reaches below the band but not above it is no undecided case.
    # The H100's A vs A at fast-512x512@4 (eighteenth session) was 0.9851-0.9987: exit 6 before.
    assert change_of(interval(0.9851, 0.9987), 0.01) is Change.NOT_SLOWER
    assert change_of(interval(0.98, 1.01), 0.01) is Change.NOT_SLOWER, "up to the tolerance, as same"
    assert change_of(interval(0.98, 1.0101), 0.01) is Change.INCONCLUSIVE


def test_looks_share_the_error():
    assert look_confidence(0.95, 1) == 0.95 and look_confidence(0.95, 5) == pytest.approx(0.99)
    with pytest.raises(ValueError, match="looks=0"):
        look_confidence(0.95, 0)


def test_bad_rounds_are_refused_by_name():
    with pytest.raises(ValueError, match="at least 2"):
        paired_ratio([1.0], [1.0])
    with pytest.raises(ValueError, match="samples: round 2 of 2 is nan: rounds must be positive"):
        two_sample_ratio([1.0, 1.0], [1.0, float("nan")])
