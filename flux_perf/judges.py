"""The judges: pure functions from measured data and references to verdicts. Nothing here
measures, reads files or writes them, so every verdict can be re-derived from a record.

Latency has five outcomes: pass, fail, inconclusive (the interval straddles the budget),
disturbed (slow, but the machine was not the card the reference was made on: another
process, thermal or hardware slow-down, clocks far below the reference's) and no-budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .budgets import LatencyBudget
from .fidelity import compare_images
from .stats import Verdict, latency_verdict, look_confidence

CONFIDENCE = 0.95
# The SM clock may sit this far under the reference's before the rounds count as another machine.
CLOCK_DROP = 0.10


@dataclass(frozen=True)
class LatencyResult:
    budget: LatencyBudget | None
    verdict: Verdict
    strict: bool
    disturbance: tuple[str, ...] = ()  # what made the rounds unrepresentative, if anything did

    @property
    def stale(self) -> tuple[str, ...]:
        """Why the recorded reference judged against may no longer hold."""
        return self.budget.stale if self.budget else ()

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAIL or (self.strict and self.verdict is Verdict.INCONCLUSIVE)

    def to_dict(self) -> dict:
        return {"budget": self.budget.to_dict() if self.budget else None, "verdict": self.verdict.value,
                "strict": self.strict, "failed": self.failed, "disturbance": list(self.disturbance),
                "stale": list(self.stale)}


def describe_disturbance(flags: Sequence[str], processes: Sequence[dict], sm_clock_mhz: float | None,
                         reference_clock_mhz: float | None) -> list[str]:
    """What made the timed rounds unlike the card the reference was made on, in words."""
    reasons = []
    if "other-processes" in flags:
        named = [f"pid {p.get('pid')} {p.get('name') or '?'} ({(p.get('used_memory_mib') or 0):.0f} MiB)"
                 for p in processes] or ["unnamed"]
        reasons.append("other processes on the GPU: " + ", ".join(named))
    for flag, words in (("thermal-throttle", "thermal slow-down"), ("hw-slowdown", "hardware slow-down")):
        if flag in flags:
            reasons.append(words)
    if sm_clock_mhz and reference_clock_mhz and sm_clock_mhz < (1 - CLOCK_DROP) * reference_clock_mhz:
        reasons.append(f"SM clock {sm_clock_mhz:.0f} MHz, {1 - sm_clock_mhz / reference_clock_mhz:.0%} under the "
                       f"reference's {reference_clock_mhz:.0f} MHz")
    return reasons


def judge_latency(samples: Sequence[float], budget: LatencyBudget | None, *, strict: bool = False,
                  looks: int = 1, disturbance: Sequence[str] = ()) -> LatencyResult:
    """The verdict of end-to-end rounds against a budget. `looks` is how many times the run
    may decide (rounds added while inconclusive): each look spends part of the error.
    A slow verdict on disturbed rounds is `disturbed`, never `fail`: the code is not to blame."""
    verdict = latency_verdict(samples, budget, look_confidence(CONFIDENCE, looks))
    if disturbance and verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE):
        verdict = Verdict.DISTURBED
    return LatencyResult(budget, verdict, strict, tuple(disturbance) if verdict is Verdict.DISTURBED else ())


@dataclass(frozen=True)
class FidelityResult:
    verdict: str  # "pass" | "fail" | "error" | "updated"
    ssim: float | None = None
    psnr: float | None = None
    floor: float | None = None
    floor_source: str | None = None
    baseline: str | None = None
    evidence: str | None = None  # side-by-side PNG written on failure
    message: str | None = None
    stale: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def judge_fidelity(baseline: np.ndarray, image: np.ndarray, floor: float, floor_source: str, *,
                   baseline_path: str | None = None, stale: Sequence[str] = ()) -> FidelityResult:
    """SSIM of `image` against the bf16 baseline image, against `floor`."""
    similarity = compare_images(baseline, image)
    return FidelityResult("pass" if similarity.ssim >= floor else "fail", similarity.ssim,
                          similarity.to_dict()["psnr"], floor, floor_source, baseline_path, stale=list(stale))


def judge_target(median_s: float, target_s: float | None) -> dict | None:
    """The guide's target for a scenario: met or not, and by how much. Reported, never a gate
    unless the run asks for it (`--flux-enforce-targets`)."""
    if target_s is None:
        return None
    return {"seconds": target_s, "met": median_s <= target_s, "gap_s": median_s - target_s}
