"""The latency judge: a case's timed rounds against its budgets, one-sided.

Slower is judged against each budget: `fail` when the whole interval is over it, `pass` when the
whole interval is under it, `inconclusive` when it straddles it (the measurement adds rounds
first). Faster is never a problem: it passes and says by how much. A slow verdict on rounds that
ran on a disturbed machine is `disturbed` (the code is not judged), and a case with no recorded
reference is `no-reference`, a failure that names the command recording it. Each verdict also
says the smallest slow-down the run could have called a failure (its detection limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ..instrument.rounds import summarize
from ..instrument.telemetry import Flag
from .budgets import LatencyBudget
from .stats import RatioInterval, Serial, look_confidence, serial_widening, two_sample_ratio, widen_around, widened

CONFIDENCE = 0.95
# The SM clock may sit this far under the reference's before the rounds count as another machine.
CLOCK_DROP = 0.10
# The timed rounds may run this much slower than the same code's last two warm-up calls, seconds
# before in the same process, before the machine is taken to have changed under the case. The
# median case on the H100 moves 0.1 % between the two; a host-bound case once moved 47 %.
WARMUP_DRIFT = 0.10


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"  # the interval straddles a budget, even after the extra rounds
    DISTURBED = "disturbed"  # slow on a machine unlike the reference's: not judged, never the code's failure
    NO_REFERENCE = "no-reference"  # nothing recorded to judge against: a failure until recorded
    RECORDED = "recorded"  # a sanctioned update: these rounds became the reference


# When several budgets judge a case, the first of these found decides. A missing reference comes
# before a disturbance: it fails whatever the machine did (no A/B records it), where DISTURBED is
# not a failure and would hide it.
_DECISIVE = (Verdict.FAIL, Verdict.NO_REFERENCE, Verdict.DISTURBED, Verdict.INCONCLUSIVE, Verdict.PASS,
             Verdict.RECORDED)


@dataclass(frozen=True)
class BudgetCheck:
    """This run's median against one budget, in seconds."""

    budget: LatencyBudget
    verdict: Verdict
    low_s: float  # the (widened) interval of this run's median (relative budgets: the ratio's, times the reference)
    high_s: float
    fails_from_s: float  # the smallest median this run would have called over the budget
    ratio: RatioInterval | None = None  # against the recorded rounds, when the reference kept them
    serial: Serial | None = None  # the rounds' serial correlation and the widening it gave the interval

    def to_dict(self) -> dict:
        return {"budget": self.budget.to_dict(), "verdict": self.verdict.value, "low_s": self.low_s,
                "high_s": self.high_s, "fails_from_s": self.fails_from_s,
                "ratio": self.ratio.to_dict() if self.ratio else None,
                "serial": self.serial.to_dict() if self.serial else None}


def _side(low: float, high: float, limit: float, reached: bool) -> Verdict:
    if not reached:
        return Verdict.INCONCLUSIVE
    if low > limit:
        return Verdict.FAIL
    return Verdict.PASS if high <= limit else Verdict.INCONCLUSIVE


def check_budget(samples: Sequence[float], budget: LatencyBudget, confidence: float) -> BudgetCheck:
    """One budget: a relative budget with recorded rounds compares the two sets of rounds (exact
    Mann-Whitney interval of the ratio, so the reference's own noise counts); otherwise the
    median's interval against the budget in seconds. Both intervals take the rounds as independent:
    each is widened for the rounds' serial correlation (stats.serial_widening, over this run's and
    the reference's rounds, each in the order timed). A reference of too few rounds for the
    two-sample interval to reach `confidence` (one or two) is taken as exact, as one without rounds:
    else it could never fail again. `fails_from_s`: the median at which the widened interval's low
    end reaches the budget (scaling the rounds scales both), in this run's seconds either way."""
    summary = summarize(samples, confidence)  # refuses rounds no timer gives (NaN, zero, negative)
    serial = serial_widening(samples, budget.recorded_samples)
    if budget.kind == "relative" and budget.recorded_samples:
        ratio = two_sample_ratio(budget.recorded_samples, samples, confidence)
        if ratio.reached:
            ratio = widened(ratio, serial.widening)
            reference, limit = budget.reference_s, 1 + budget.tolerance
            verdict = _side(ratio.low, ratio.high, limit, True)
            return BudgetCheck(budget, verdict, ratio.low * reference, ratio.high * reference,
                               summary.median * limit / ratio.low, ratio, serial)
    reached = summary.ci_level >= confidence - 1e-12
    low, high = widen_around(summary.median, summary.ci_low, summary.ci_high, serial.widening)
    verdict = _side(low, high, budget.seconds, reached)
    return BudgetCheck(budget, verdict, low, high, budget.seconds * summary.median / low, serial=serial)


@dataclass(frozen=True)
class LatencyResult:
    verdict: Verdict
    checks: tuple[BudgetCheck, ...]
    strict: bool
    disturbance: tuple[str, ...] = ()  # what made the rounds unrepresentative, if anything did
    missing: str | None = None  # no recorded reference: why, and the command that records it
    stale: tuple[str, ...] = ()  # why the recorded reference may no longer hold
    reference_s: float | None = None  # the recorded median, when there is one
    faster_by: float | None = None  # confidently faster than the reference by this fraction
    median_s: float | None = None  # this run's

    @property
    def budget(self) -> LatencyBudget | None:
        """The budget that decided the verdict."""
        decisive = [c for c in self.checks if c.verdict is self.verdict] or list(self.checks)
        return decisive[0].budget if decisive else None

    @property
    def fails_from_s(self) -> float | None:
        """The smallest median this run would have called a failure, over every budget."""
        return min((c.fails_from_s for c in self.checks), default=None)

    @property
    def detection_limit(self) -> float | None:
        """The smallest slow-down against the reference (or, without one, against this run) that this
        run would have called a failure at its measured noise and rounds: a median there fails this
        run's own interval. Not even odds: a case truly that slow is caught at the first look 11-51 %
        of the time, over the three looks 58-100 % (docs/measurement.md). What the run could see,
        not a promise."""
        anchor = self.reference_s or self.median_s
        if self.fails_from_s is None or not anchor:
            return None
        return self.fails_from_s / anchor - 1

    @property
    def failed(self) -> bool:
        return self.verdict in (Verdict.FAIL, Verdict.NO_REFERENCE) or (
            self.strict and self.verdict in (Verdict.INCONCLUSIVE, Verdict.DISTURBED))

    def to_dict(self) -> dict:
        budget = self.budget
        return {"verdict": self.verdict.value, "budget": budget.to_dict() if budget else None,
                "checks": [c.to_dict() for c in self.checks], "strict": self.strict, "failed": self.failed,
                "disturbance": list(self.disturbance), "missing": self.missing, "stale": list(self.stale),
                "reference_s": self.reference_s, "faster_by": self.faster_by, "median_s": self.median_s,
                "fails_from_s": self.fails_from_s, "detection_limit": self.detection_limit}


def describe_disturbance(flags: Sequence[Flag], processes: Sequence[dict], sm_clock_mhz: float | None,
                         reference_clock_mhz: float | None, host_stall: float | None = None,
                         host_steal: float | None = None) -> list[str]:
    """What made the timed rounds unlike the card the reference was made on, in words."""
    reasons = []
    if Flag.OTHER_PROCESSES in flags:
        named = [f"pid {p.get('pid')} {p.get('name') or '?'} ({(p.get('used_memory_mib') or 0):.0f} MiB)"
                 for p in processes] or ["unnamed"]
        reasons.append("other processes on the GPU: " + ", ".join(named))
    for flag, words in ((Flag.THERMAL, "thermal slow-down"), (Flag.HW_SLOWDOWN, "hardware slow-down")):
        if flag in flags:
            reasons.append(words)
    if Flag.CPU_CONTENTION in flags:
        reasons.append(f"host CPU contention: runnable tasks waited for a CPU {host_stall or 0:.0%} of the timed "
                       "rounds (/proc/pressure/cpu)")
    if Flag.CPU_STEAL in flags:
        reasons.append(f"host CPU steal: the hypervisor took {host_steal or 0:.0%} of the CPU time of the timed "
                       "rounds (/proc/stat)")
    if sm_clock_mhz and reference_clock_mhz and sm_clock_mhz < (1 - CLOCK_DROP) * reference_clock_mhz:
        reasons.append(f"SM clock {sm_clock_mhz:.0f} MHz, {1 - sm_clock_mhz / reference_clock_mhz:.0%} under the "
                       f"reference's {reference_clock_mhz:.0f} MHz")
    return reasons


def describe_warmup_drift(warmup_s: Sequence[float], timed_median_s: float,
                          budgets: Sequence[LatencyBudget], *, recording: bool = False) -> str | None:
    """A slow-down that set in between the warm-up and the timed rounds, in words; None without one.
    When the same code, in the same process, ran within every budget twice in a row just before
    the timed rounds, a timed median far above it is the machine changing under the case, not the
    code: a regression slows the warm-up too. `recording`: rounds of a sanctioned update timed by a
    steady clock (a GPU's events); no budget need vouch for the warm-up (a warm-up over an
    absolute budget included), since rounds that drifted would become a reference too slow for
    every later run."""
    if len(warmup_s) < 2 or not (budgets or recording):
        return None
    before = max(warmup_s[-2:])
    limit = min(b.seconds for b in budgets) if budgets else None
    vouched = limit is not None and before <= limit
    if not (vouched or recording) or timed_median_s <= before * (1 + WARMUP_DRIFT):
        return None
    within = f", within the {limit:.3f} s budget" if vouched else ""
    return (f"the timed rounds (median {timed_median_s:.3f} s) ran {timed_median_s / before - 1:.0%} slower than "
            f"this case's last warm-up calls seconds before, the same code in the same process ({before:.3f} s"
            f"{within}): the machine changed under the case")


def judge_latency(samples: Sequence[float], budgets: Sequence[LatencyBudget], *, strict: bool = False,
                  looks: int = 1, disturbance: Sequence[str] = (), missing: str | None = None,
                  recording: bool = False) -> LatencyResult:
    """The verdict of end-to-end rounds against every budget. `looks` is how many times the run
    may decide (rounds added while undecided): each look spends part of the error. `missing`
    says no reference was recorded (and how to record one); `recording`: a sanctioned update."""
    confidence = look_confidence(CONFIDENCE, looks)
    checks = tuple(check_budget(samples, budget, confidence) for budget in budgets)
    verdicts = {c.verdict for c in checks}
    if missing and not recording:
        verdicts.add(Verdict.NO_REFERENCE)
    if not verdicts:
        verdicts.add(Verdict.RECORDED if recording else Verdict.NO_REFERENCE)
    # A slow case on a disturbed machine is not judged; a recording there is never kept (suite/update.py).
    if disturbance and (recording or verdicts & {Verdict.FAIL, Verdict.INCONCLUSIVE}):
        verdicts.add(Verdict.DISTURBED)
        verdicts -= {Verdict.FAIL}
    verdict = min(verdicts, key=_DECISIVE.index)
    relative = next((c for c in checks if c.budget.kind == "relative"), None)
    faster = None
    if relative is not None and relative.ratio is not None and relative.ratio.reached and \
            relative.ratio.high < 1 - (relative.budget.tolerance or 0):
        faster = 1 - relative.ratio.ratio
    return LatencyResult(verdict, checks, strict, tuple(disturbance) if verdict is Verdict.DISTURBED else (),
                         missing if not recording else None,
                         relative.budget.stale if relative else (), relative.budget.reference_s if relative else None,
                         faster, summarize(samples).median)


def decided(samples: Sequence[float], budgets: Sequence[LatencyBudget], looks: int) -> bool:
    """Whether the rounds so far settle every budget (no more rounds would change the verdict's kind)."""
    confidence = look_confidence(CONFIDENCE, looks)
    return all(check_budget(samples, b, confidence).verdict is not Verdict.INCONCLUSIVE for b in budgets)


@dataclass(frozen=True)
class Target:
    """The guide's target for a scenario: met or not, and by how much. Reported, never a gate
    unless the run asks for it (`--flux-enforce-targets`)."""

    seconds: float
    met: bool
    gap_s: float

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "met": self.met, "gap_s": self.gap_s}


def judge_target(median_s: float, target_s: float | None) -> Target | None:
    return None if target_s is None else Target(target_s, median_s <= target_s, median_s - target_s)
