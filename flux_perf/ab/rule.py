"""How an A/B's pairs are judged, live (orchestrator.py) and from recorded rounds (pairs.py).

A case's verdict comes from all its pairs at once (`pool`): the Hodges-Lehmann ratio with its
exact Wilcoxon signed-rank 95 % interval, against the tolerance band. `slower` also needs Holm's
correction over the cases of a run (`holm_over`), at a family-wise error of 2.5 %: the one-sided
level of the 95 % interval, so a run of one case decides exactly as its interval does. A block's
own interval (`judge_block`) is kept to show drift; it decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..gate.stats import FAMILY_ALPHA, Change, change_of, holm, paired_p_slower, paired_ratio

CONFIDENCE = 0.95  # of every interval
PASSES = (Change.SAME.value, Change.NOT_SLOWER.value)  # a control not seen slower leaves these unproven


@dataclass
class Pooled:
    """Pairs judged together: the ratio (head or control over base), its 95 % interval, the change
    that shows against the tolerance, and the one-sided p-value that it exceeds 1 + tolerance."""

    pairs: int
    ratio: float
    low: float
    high: float
    reached: bool  # False: too few pairs for a 95 % interval (then inconclusive)
    change: str
    p_slower: float


def pool(base: list[float], other: list[float], tolerance: float) -> Pooled:
    interval = paired_ratio(base, other, CONFIDENCE)
    return Pooled(len(base), interval.ratio, interval.low, interval.high, interval.reached,
                  change_of(interval, tolerance).value, paired_p_slower(base, other, 1 + tolerance))


def verdict_of(pooled: Pooled, control: Pooled | None, rejected: bool, family: int) -> tuple[str, str | None]:
    """A case's verdict and, where it is not the pooled interval's own change, why: `slower` needs
    Holm's rejection among `family` cases; `same` and `not slower` need the pooled control seen
    slower."""
    if pooled.change == Change.SLOWER.value and not rejected:
        return Change.INCONCLUSIVE.value, f"slower at 95 % alone, not after Holm's correction over {family} cases"
    if pooled.change in PASSES and control is not None and control.change != Change.SLOWER.value:
        return Change.INCONCLUSIVE.value, (f"the planted control was not seen slower ({control.change}): "
                                           f"'{pooled.change}' unproven")
    return pooled.change, None


@dataclass
class Block:
    """One block of interleaved pairs with its own interval: drift shows here; it decides nothing."""

    base_s: list[float]
    head_s: list[float]
    ratio: float
    ratio_low: float
    ratio_high: float
    change: str
    seconds: float = 0.0  # wall clock of the block's rounds, every side
    # The positive control against base, when the run has one: rounds, ratio, interval, change.
    control: dict | None = None
    # The host during the block (instrument/host.py): shares of the block's time in which tasks
    # waited for a CPU (PSI) and of the CPU time a hypervisor took; None where unreadable.
    host_cpu_stall: float | None = None
    host_cpu_steal: float | None = None


def judge_block(walls: dict[str, list[float]], seconds: float, tolerance: float) -> Block:
    own = paired_ratio(walls["base"], walls["head"], CONFIDENCE)
    control = None
    if "control" in walls:
        seen = paired_ratio(walls["base"], walls["control"], CONFIDENCE)
        control = {"control_s": walls["control"], "ratio": seen.ratio, "ratio_low": seen.low,
                   "ratio_high": seen.high, "change": change_of(seen, tolerance).value}
    return Block(walls["base"], walls["head"], own.ratio, own.low, own.high, change_of(own, tolerance).value,
                 seconds, control)


def holm_over(p_values: list[float], family: int | None = None) -> list[bool]:
    """Holm's rejections of "no slower than 1 + tolerance" at FAMILY_ALPHA. `family` larger than
    the p-values given counts the missing cases as showing nothing (p = 1): the rejections a run
    of that many cases would make if the others were unchanged."""
    missing = max(0, (family or 0) - len(p_values))
    return holm(list(p_values) + [1.0] * missing, FAMILY_ALPHA)[:len(p_values)]
