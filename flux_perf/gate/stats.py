"""Exact distribution-free intervals for the ratio of two sets of rounds (the median of one
set and its interval against a budget in seconds are instrument/rounds.py's).

- A run against its recorded reference (two independent sets): the Hodges-Lehmann ratio with
  the exact Mann-Whitney interval (R's `wilcox.test(x, y, conf.int=TRUE)`).
- Interleaved pairs (A/B on one machine): the Hodges-Lehmann ratio with the exact Wilcoxon
  signed-rank interval (R's `wilcox.test(x, y, paired=TRUE, conf.int=TRUE)`).

Both exact intervals come from the test they invert: a ratio lies inside exactly when the exact
test of that ratio does not reject it, so their coverage is at least the level asked for at every
sample size (tests/test_stats.py checks them against scipy). Ratios are taken on log times.

Also the error shared over the looks of a run that stops at its first clear verdict (look_confidence),
and the widening that keeps the intervals' error with serially correlated rounds (serial_widening).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import Enum

import numpy as np

from ..instrument.rounds import checked_rounds


# -- exact null distributions ------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def signed_rank_cdf(n: int) -> np.ndarray:
    """P(T <= t), t = 0..n(n+1)/2, for T the Wilcoxon signed-rank statistic of n pairs with no
    difference: each rank joins the sum with probability 1/2. Exact in float64 up to n = 53
    (multiples of 2^-n); beyond, rounding far below any level used here."""
    top = n * (n + 1) // 2
    p = np.zeros(top + 1)
    p[0] = 1.0
    for rank in range(1, n + 1):
        shifted = np.zeros_like(p)
        shifted[rank:] = p[:-rank]
        p = (p + shifted) / 2
    return np.cumsum(p)


@functools.lru_cache(maxsize=64)
def rank_sum_cdf(n: int, m: int) -> np.ndarray:
    """P(U <= u), u = 0..n*m, for U the Mann-Whitney statistic of samples of n and m with no
    difference: the Gaussian binomial coefficient [n+m choose n] in q, in exact integers."""
    counts = [1]
    for i in range(1, min(n, m) + 1):  # prod (1 - q^(N-i+1)) / (1 - q^i), N = n + m
        k = n + m - i + 1
        grown = counts + [0] * k
        for j in range(len(grown) - 1, k - 1, -1):
            grown[j] -= grown[j - k]
        for j in range(i, len(grown)):  # divide by (1 - q^i): running sums with stride i
            grown[j] += grown[j - i]
        counts = grown[:n * m + 1] if len(grown) > n * m + 1 else grown
    total = math.comb(n + m, n)
    running, cdf = 0, []
    for count in counts[:n * m + 1]:
        running += count
        cdf.append(running / total)
    return np.array(cdf)


def _dropped(cdf: np.ndarray, confidence: float) -> int | None:
    """The rank k of the interval's lower end among the ordered averages (differences): the
    largest k with P(stat <= k - 1) <= alpha/2, so [x_(k), x_(N-k+1)] covers with probability
    1 - 2 P(stat <= k - 1) >= `confidence` and drops k - 1 values at each end. None: too few
    rounds for any interval of that level."""
    alpha = (1 - confidence) / 2
    within = np.nonzero(cdf <= alpha + 1e-12)[0]
    return int(within[-1]) + 1 if len(within) else None


@dataclass(frozen=True)
class RatioInterval:
    """A ratio (second / first) with its exact interval at `confidence`; `reached` is False when
    too few rounds allow no interval of that level (then it is the full range of the ratios)."""

    ratio: float
    low: float
    high: float
    confidence: float
    reached: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _interval(ordered: np.ndarray, cdf: np.ndarray, confidence: float) -> RatioInterval:
    drop = _dropped(cdf, confidence)
    reached = drop is not None
    low, high = (ordered[drop - 1], ordered[len(ordered) - drop]) if reached else (ordered[0], ordered[-1])
    return RatioInterval(math.exp(float(np.median(ordered))), math.exp(low), math.exp(high), confidence, reached)


def _logs(samples: Sequence[float], what: str) -> np.ndarray:
    """Log times of rounds checked as the instrument checks them (instrument/rounds.checked_rounds)."""
    if np.ndim(samples) != 1:
        raise ValueError(f"{what}: rounds must be one list of positive, finite seconds")
    try:
        return np.log(checked_rounds(samples))
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None


def walsh_averages(base: Sequence[float], head: Sequence[float]) -> np.ndarray:
    """The sorted Walsh averages of the pairs' log ratios log(head/base)."""
    if len(base) != len(head) or len(base) < 2:
        raise ValueError(f"paired rounds must match and be at least 2: got {len(base)} and {len(head)}")
    d = _logs(head, "head") - _logs(base, "base")
    i, j = np.triu_indices(len(d))
    return np.sort((d[i] + d[j]) / 2)


def paired_ratio(base: Sequence[float], head: Sequence[float], confidence: float = 0.95) -> RatioInterval:
    """head/base from rounds taken in pairs: the Hodges-Lehmann ratio and the exact Wilcoxon
    signed-rank interval (distribution-free for symmetric log ratios)."""
    _check_confidence(confidence)
    return _interval(walsh_averages(base, head), signed_rank_cdf(len(base)), confidence)


def two_sample_ratio(reference: Sequence[float], samples: Sequence[float],
                     confidence: float = 0.95) -> RatioInterval:
    """samples/reference from two independent sets of rounds: the Hodges-Lehmann ratio and the
    exact Mann-Whitney interval (distribution-free for a shift of log time)."""
    _check_confidence(confidence)
    if len(reference) < 1 or len(samples) < 1:
        raise ValueError("both sets need rounds to compare")
    differences = np.sort(np.subtract.outer(_logs(samples, "samples"), _logs(reference, "reference")).ravel())
    return _interval(differences, rank_sum_cdf(len(reference), len(samples)), confidence)


def paired_p_slower(base: Sequence[float], head: Sequence[float], ratio: float) -> float:
    """Exact one-sided p-value that head/base exceeds `ratio` (signed-rank test of the log ratios
    against log(ratio)): the chance of a statistic this large if head/base were exactly `ratio`.
    It is below alpha/2 exactly when the paired interval at 1 - alpha lies above `ratio`."""
    walsh = walsh_averages(base, head)
    above = int(np.sum(walsh > math.log(ratio)))
    cdf = signed_rank_cdf(len(base))
    return float(cdf[len(walsh) - above])  # P(T >= above) = P(T <= N - above), T symmetric


def two_sample_p_slower(reference: Sequence[float], samples: Sequence[float], ratio: float) -> float:
    """Exact one-sided p-value that samples/reference exceeds `ratio` (Mann-Whitney test of log
    time shifted by log(ratio)). It is below alpha/2 exactly when two_sample_ratio's interval at
    1 - alpha lies above `ratio`."""
    differences = np.subtract.outer(_logs(samples, "samples"), _logs(reference, "reference"))
    above = int(np.sum(differences > math.log(ratio)))
    cdf = rank_sum_cdf(len(reference), len(samples))
    return float(cdf[differences.size - above])  # P(U >= above) = P(U <= nm - above), U symmetric


FAMILY_ALPHA = 0.025  # Holm's family-wise error of `ab` and `compare`: the one-sided level of a 95 % interval


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rejections at family-wise error `alpha`: the smallest p against
    alpha/K, the next against alpha/(K-1), ..., stopping at the first that is not rejected."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def look_confidence(confidence: float, looks: int) -> float:
    """Error spending over planned looks (Bonferroni): a run that may take its verdict after
    `looks` batches of rounds gives each look an equal share of the error, so stopping at the
    first clear verdict keeps each error rate at most 1 - `confidence` overall."""
    if looks < 1:
        raise ValueError(f"looks={looks}: need at least one look")
    return 1 - (1 - confidence) / looks


# -- serially correlated rounds -------------------------------------------------------------------

# The lag-1 autocorrelation the widening assumes, at least and at most. Rounds on the H100 are
# serially correlated (A/B block series: 0.16 on average, 0.4-0.55 in some); 8-32 rounds of one case
# estimate it too roughly to assume less (docs/measurement.md, "Serially correlated rounds").
SERIAL_FLOOR = 0.35
SERIAL_CAP = 0.6


@dataclass(frozen=True)
class Serial:
    """How serially correlated a case's rounds looked, and how much that widened its intervals:
    `lag1` the rounds' pooled lag-1 autocorrelation (bias-corrected, unclipped; None: too few rounds
    to estimate), `assumed` what the widening took ([SERIAL_FLOOR, SERIAL_CAP]), `widening` the factor
    on each half-width."""

    lag1: float | None
    assumed: float
    widening: float

    def to_dict(self) -> dict:
        return asdict(self)


def lag1_autocorrelation(*series: Sequence[float]) -> float | None:
    """The lag-1 autocorrelation of log rounds pooled over several series, each in the order its
    rounds were timed and centred on its own mean (a level between series is not correlation).
    Corrected for its small-sample bias (Marriott-Pope: E[r] ~ rho - (1 + 3 rho) / n for one series
    of n, -0.125 at 8 independent rounds). None: too few rounds for the correction."""
    num = den = 0.0
    lengths = []
    for rounds in series:
        if len(rounds) < 2:
            continue
        x = _logs(rounds, "rounds")
        x = x - x.mean()
        num, den = num + float(np.dot(x[1:], x[:-1])), den + float(np.dot(x, x))
        lengths.append(len(x))
    c = sum((n - 1) / n for n in lengths) / max(sum(n - 1 for n in lengths), 1)
    if not lengths or 3 * c >= 1:
        return None
    r = num / den if den > 0 else 0.0
    return (r + c) / (1 - 3 * c)


def serial_widening(*series: Sequence[float]) -> Serial:
    """How much to widen an interval that took the rounds as independent. With lag-1 autocorrelation
    rho, a location estimated from n rounds varies (1 + rho) / (1 - rho) times as much as from n
    independent ones (AR(1), large n), so each half-width grows by sqrt((1 + rho) / (1 - rho)). The
    case's own estimate is too rough alone (its sd is about 0.3 at 8 + 8 rounds, and a shift shared by
    a run's rounds hides from it): it is taken no lower than SERIAL_FLOOR. With AR(1) rounds this holds
    a false FAIL at the edge to 2.5 % up to rho = 0.45 (tests/test_serial_rounds.py)."""
    lag1 = lag1_autocorrelation(*series)
    assumed = SERIAL_CAP if lag1 is None else min(max(lag1, SERIAL_FLOOR), SERIAL_CAP)
    return Serial(lag1, assumed, math.sqrt((1 + assumed) / (1 - assumed)))


def widen_around(point: float, low: float, high: float, factor: float) -> tuple[float, float]:
    """[low, high] (positive, around `point`) with each half-width in log space times `factor`."""
    centre = math.log(point)
    return (math.exp(centre - factor * (centre - math.log(low))),
            math.exp(centre + factor * (math.log(high) - centre)))


def widened(interval: RatioInterval, factor: float) -> RatioInterval:
    """The interval with each half-width around its ratio, in log space, times `factor`."""
    low, high = widen_around(interval.ratio, interval.low, interval.high, factor)
    return replace(interval, low=low, high=high)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")


# -- changes between two sets of rounds ------------------------------------------------------------

class Change(str, Enum):
    FASTER = "faster"
    SLOWER = "slower"
    SAME = "same"
    NOT_SLOWER = "not slower"  # at most 1 + tolerance, perhaps faster beyond the band: a pass
    INCONCLUSIVE = "inconclusive"


def change_of(interval: RatioInterval, tolerance: float) -> Change:
    """slower: the whole interval above 1 + tolerance; faster: below 1 - tolerance; same: inside
    the band; not slower: at most 1 + tolerance but reaching below the band (a gate is one-sided:
    a head that may be faster is no undecided case); otherwise (or with too few rounds for the
    interval's level) inconclusive."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance={tolerance}: must be a finite fraction >= 0")
    if not interval.reached:
        return Change.INCONCLUSIVE
    if interval.low > 1 + tolerance:
        return Change.SLOWER
    if interval.high < 1 - tolerance:
        return Change.FASTER
    if interval.low >= 1 - tolerance and interval.high <= 1 + tolerance:
        return Change.SAME
    if interval.high <= 1 + tolerance:
        return Change.NOT_SLOWER
    return Change.INCONCLUSIVE
