"""Timed rounds summarised: median, quartiles and the order-statistic interval of the median."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


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


def checked_rounds(samples: Sequence[float]) -> list[float]:
    """The rounds as floats. A NaN, infinite, zero or negative round is no time a round can take (a
    broken timer, a failed round): refused naming it, never summarised into a verdict."""
    values = [float(x) for x in samples]
    for i, x in enumerate(values):
        if not (math.isfinite(x) and x > 0):
            raise ValueError(f"round {i + 1} of {len(values)} is {x!r}: rounds must be positive, finite seconds")
    return values


def summarize(samples: Sequence[float], confidence: float = 0.95) -> Summary:
    if not len(samples):
        raise ValueError("cannot summarise zero samples")
    data = sorted(checked_rounds(samples))
    n = len(data)
    if n >= 2:
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
    else:
        q1 = q3 = data[0]
    low, high, level = median_ci(data, confidence)
    return Summary(n=n, median=statistics.median(data), q1=q1, q3=q3, minimum=data[0], maximum=data[-1],
                   mean=statistics.fmean(data), stdev=statistics.stdev(data) if n >= 2 else 0.0,
                   ci_low=low, ci_high=high, ci_level=level)
