"""Statistics of timed rounds and the verdicts built on them.

A latency gate has three honest outcomes: pass (the median is confidently under the
budget), fail (confidently over) and inconclusive (the interval straddles it). The
interval is the distribution-free order-statistic confidence interval of the median.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float
    mean: float
    stdev: float
    ci_low: float
    ci_high: float
    ci_level: float  # the coverage the interval really has (order statistics are discrete)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> dict:
        return {**asdict(self), "iqr": self.iqr}


def _binomial_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_ci(sorted_samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Order-statistic interval [x_(k), x_(n-k+1)] with the largest k whose coverage
    1 - 2 P(X <= k-1) still reaches `confidence`; with too few samples for that, the
    full range and the coverage it has."""
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("no samples")
    best_k, best_cov = 1, 1 - 2 * _binomial_cdf(0, n)
    for k in range(2, n // 2 + 1):
        coverage = 1 - 2 * _binomial_cdf(k - 1, n)
        if coverage < confidence:
            break
        best_k, best_cov = k, coverage
    return sorted_samples[best_k - 1], sorted_samples[n - best_k], max(best_cov, 0.0)


def summarize(samples: Sequence[float], confidence: float = 0.95) -> Summary:
    if not samples:
        raise ValueError("cannot summarise zero samples")
    data = sorted(float(x) for x in samples)
    n = len(data)
    if n >= 2:
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
    else:
        q1 = q3 = data[0]
    low, high, level = median_ci(data, confidence)
    return Summary(
        n=n,
        median=statistics.median(data),
        q1=q1,
        q3=q3,
        minimum=data[0],
        maximum=data[-1],
        mean=statistics.fmean(data),
        stdev=statistics.stdev(data) if n >= 2 else 0.0,
        ci_low=low,
        ci_high=high,
        ci_level=level,
    )


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    DISTURBED = "disturbed"  # slow on a machine unlike the reference's: re-run, do not blame the code
    NO_BUDGET = "no-budget"


def look_confidence(confidence: float, looks: int) -> float:
    """Error spending over planned looks (Bonferroni): a run that may take its verdict after
    `looks` batches of rounds gives each look an equal share of the error, so stopping at the
    first clear verdict keeps the false-alarm rate at most 1 - `confidence` overall."""
    if looks < 1:
        raise ValueError(f"looks={looks}: need at least one look")
    return 1 - (1 - confidence) / looks


def gate(summary: Summary, budget: float | None, confidence: float = 0.95) -> Verdict:
    """Compare the median's interval with a latency budget (same unit). Too few rounds for an
    interval of `confidence` (`summary` made at that confidence) is inconclusive."""
    if budget is None:
        return Verdict.NO_BUDGET
    if summary.ci_level < confidence - 1e-12:
        return Verdict.INCONCLUSIVE
    if summary.ci_high <= budget:
        return Verdict.PASS
    if summary.ci_low > budget:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE


class Change(str, Enum):
    FASTER = "faster"
    SLOWER = "slower"
    SAME = "same"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Comparison:
    ratio: float  # head median / base median
    ratio_low: float
    ratio_high: float
    change: Change

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "ratio_low": self.ratio_low, "ratio_high": self.ratio_high,
                "change": self.change.value}


def compare_samples(base: Sequence[float], head: Sequence[float], tolerance: float = 0.03,
                    confidence: float = 0.95, resamples: int = 4000, seed: int = 0) -> Comparison:
    """Bootstrap interval of median(head)/median(base).

    slower: the whole interval is above 1 + tolerance; faster: below 1 - tolerance;
    same: the whole interval is inside the tolerance band; otherwise inconclusive.
    """
    if not base or not head:
        raise ValueError("both runs need samples to compare")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance={tolerance}: must be a finite fraction >= 0")
    rng = random.Random(seed)  # fixed seed: the same inputs always give the same verdict
    ratios = sorted(
        statistics.median(rng.choices(head, k=len(head))) / statistics.median(rng.choices(base, k=len(base)))
        for _ in range(resamples)
    )
    alpha = (1 - confidence) / 2
    low = ratios[int(alpha * (resamples - 1))]
    high = ratios[int(math.ceil((1 - alpha) * (resamples - 1)))]
    ratio = statistics.median(head) / statistics.median(base)
    return Comparison(ratio, low, high, _change(low, high, tolerance))


def latency_verdict(samples: Sequence[float], budget, confidence: float = 0.95) -> Verdict:
    """Absolute budgets (and relative ones recorded without rounds): the median's interval
    against the budget. Relative budgets with recorded rounds: the bootstrap interval of the
    ratio of medians, so the recorded run's own noise counts too."""
    if budget is None:
        return Verdict.NO_BUDGET
    if budget.kind == "relative" and len(budget.recorded_samples) >= 2:
        change = compare_samples(budget.recorded_samples, samples, tolerance=budget.tolerance,
                                 confidence=confidence).change
        return {Change.SLOWER: Verdict.FAIL, Change.INCONCLUSIVE: Verdict.INCONCLUSIVE}.get(change, Verdict.PASS)
    return gate(summarize(samples, confidence), budget.seconds, confidence)


def _signed_rank_cdf(n: int) -> list[float]:
    """P(T <= t) for t = 0..n(n+1)/2, T the Wilcoxon signed-rank statistic of n pairs under
    no difference (exact: count the subsets of ranks 1..n by their sum)."""
    top = n * (n + 1) // 2
    counts = [1] + [0] * top
    for rank in range(1, n + 1):
        for total in range(top, rank - 1, -1):
            counts[total] += counts[total - rank]
    cdf, running = [], 0
    for count in counts:
        running += count
        cdf.append(running / 2**n)
    return cdf


def paired_comparison(base: Sequence[float], head: Sequence[float], tolerance: float,
                      confidence: float = 0.95) -> Comparison:
    """head/base from rounds taken in pairs on one machine (A/B interleaved): the Hodges-Lehmann
    estimate of the ratio with its Wilcoxon signed-rank interval (distribution-free for
    symmetric log-ratios; what R's wilcox.test(conf.int=TRUE) gives). Verdict as compare_samples."""
    if len(base) != len(head) or len(base) < 2:
        raise ValueError(f"paired rounds must match and be at least 2: got {len(base)} and {len(head)}")
    if not (math.isfinite(tolerance) and tolerance >= 0) or not 0 < confidence < 1:
        raise ValueError(f"tolerance={tolerance} must be a finite fraction >= 0 and confidence={confidence} in (0, 1)")
    logs = [math.log(h / b) for b, h in zip(base, head)]
    n = len(logs)
    walsh = sorted((logs[i] + logs[j]) / 2 for i in range(n) for j in range(i, n))
    cdf = _signed_rank_cdf(n)
    alpha = (1 - confidence) / 2
    # The largest c with P(T <= c) <= alpha: the interval drops c Walsh averages at each end.
    c = max((t + 1 for t, p in enumerate(cdf) if p <= alpha), default=0)
    low, high = walsh[c], walsh[len(walsh) - 1 - c]
    ratio = math.exp(statistics.median(walsh))
    return Comparison(ratio, math.exp(low), math.exp(high), _change(math.exp(low), math.exp(high), tolerance))


def _change(low: float, high: float, tolerance: float) -> Change:
    if low > 1 + tolerance:
        return Change.SLOWER
    if high < 1 - tolerance:
        return Change.FASTER
    if low >= 1 - tolerance and high <= 1 + tolerance:
        return Change.SAME
    return Change.INCONCLUSIVE
