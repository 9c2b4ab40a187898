"""The judges: pure functions from measured data and references to verdicts. Nothing here
measures, reads files or writes them, so every verdict can be re-derived from a record.

Latency has five outcomes: pass, fail, inconclusive (the interval straddles the budget),
disturbed (slow, but the machine was not the card the reference was made on: another
process, thermal or hardware slow-down, clocks far below the reference's) and no-budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .budgets import LatencyBudget
from .fidelity import compare_images, latent_distance
from .stacks import BASELINE
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
                         reference_clock_mhz: float | None, host_stall: float | None = None) -> list[str]:
    """What made the timed rounds unlike the card the reference was made on, in words."""
    reasons = []
    if "other-processes" in flags:
        named = [f"pid {p.get('pid')} {p.get('name') or '?'} ({(p.get('used_memory_mib') or 0):.0f} MiB)"
                 for p in processes] or ["unnamed"]
        reasons.append("other processes on the GPU: " + ", ".join(named))
    for flag, words in (("thermal-throttle", "thermal slow-down"), ("hw-slowdown", "hardware slow-down")):
        if flag in flags:
            reasons.append(words)
    if "cpu-contention" in flags:
        reasons.append(f"host CPU contention: runnable tasks waited for a CPU {host_stall or 0:.0%} of the timed "
                       "rounds (/proc/pressure/cpu)")
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
    psnr: float | None = None  # None: identical images
    latent_rel_l2: float | None = None
    floor: float | None = None
    floor_source: str | None = None
    baseline: str | None = None
    evidence: str | None = None  # side-by-side PNG written on failure
    message: str | None = None
    stale: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why it failed, one line per broken bound
    recorded: dict | None = None  # the stack's fidelity at the last sanctioned update
    calibration: dict | None = None  # band and tolerances of `flux-perf calibrate`
    changed: bool | None = None  # the output differs from the recorded one (None: nothing recorded)
    own_latent_moved: float | None = None  # latent distance to the stack's own recorded output

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _outside_band(ssim: float, psnr: float | None, distance: float | None, band: dict) -> list[str]:
    out = []
    if ssim < band["ssim"]:
        out.append(f"SSIM {ssim:.5f} < {band['ssim']:.5f}")
    if band.get("psnr") is not None and psnr is not None and psnr < band["psnr"]:
        out.append(f"PSNR {psnr:.2f} dB < {band['psnr']:.2f} dB")
    if band.get("latent_rel_l2") is not None and distance is not None and distance > band["latent_rel_l2"]:
        out.append(f"latent distance {distance:.2e} > {band['latent_rel_l2']:.2e}")
    return out


def fidelity_tolerance(recorded: dict, band: dict, spread: dict | None = None) -> dict:
    """How far a lossy stack's fidelity may move from its recorded value: as far as a lossless
    change (one at the edge of the band) on top of it would move it, or 3x its own run-to-run
    spread if that is larger. Errors add: SSIM distances roughly, squared latent distances and
    PSNR's mean squared errors exactly for independent errors."""
    spread = spread or {}
    tolerance = {"ssim": max(1 - band["ssim"], 3 * spread.get("ssim", 0))}
    if band.get("psnr") is not None and recorded.get("psnr") is not None:
        drop = 10 * math.log10(1 + 10 ** ((recorded["psnr"] - band["psnr"]) / 10))
        tolerance["psnr"] = max(drop, 3 * spread.get("psnr", 0))
    if band.get("latent_rel_l2") is not None and recorded.get("latent_rel_l2") is not None:
        old = recorded["latent_rel_l2"]
        tolerance["latent_rel_l2"] = max(math.hypot(old, band["latent_rel_l2"]) - old,
                                         3 * spread.get("latent_rel_l2", 0))
    return tolerance


def _moved(ssim: float, psnr: float | None, distance: float | None, recorded: dict, tolerance: dict) -> list[str]:
    out = []
    if tolerance.get("ssim") is not None and recorded["ssim"] - ssim > tolerance["ssim"]:
        out.append(f"SSIM {recorded['ssim']:.5f} -> {ssim:.5f} (tolerance {tolerance['ssim']:.5f})")
    old_psnr = recorded.get("psnr")
    if tolerance.get("psnr") is not None and old_psnr is not None and psnr is not None \
            and old_psnr - psnr > tolerance["psnr"]:
        out.append(f"PSNR {old_psnr:.2f} -> {psnr:.2f} dB (tolerance {tolerance['psnr']:.2f} dB)")
    old_distance = recorded.get("latent_rel_l2")
    if tolerance.get("latent_rel_l2") is not None and old_distance is not None and distance is not None \
            and distance - old_distance > tolerance["latent_rel_l2"]:
        out.append(f"latent distance {old_distance:.2e} -> {distance:.2e} (tolerance {tolerance['latent_rel_l2']:.2e})")
    return out


def judge_fidelity(baseline: np.ndarray, image: np.ndarray, floor: float, floor_source: str, *,
                   lossless: bool = False, baseline_latents: np.ndarray | None = None,
                   latents: np.ndarray | None = None, image_sha256: str | None = None,
                   recorded: dict | None = None, recorded_latents: np.ndarray | None = None,
                   calibration: dict | None = None, stack_name: str | None = None,
                   baseline_path: str | None = None, stale: Sequence[str] = ()) -> FidelityResult:
    """`image` (and its latents) against the bf16 baseline.

    The floor of budgets.toml is the outer bound of every stack. With a calibration of these
    weights on this GPU, a lossless stack (bf16 included) must stay inside the measured
    lossless band: a change within it passes and says so, a break outside it fails. A lossy
    stack must stay within its tolerance of the fidelity recorded by the last sanctioned update.
    A hand floor tighter than the calibrated band (bf16's 0.9999) yields to the band.

    Where the update recorded the stack's own final latents (`recorded_latents`; bf16's are the
    baseline's), the latent criterion is how far the output moved from them, held to the band:
    a change on top of a stack moves it from where it was by about what the change moves bf16,
    while distances to bf16 add up and blur (an exact attention-kernel change on a compiled stack
    lands as far from bf16 as 1 % noise on eager bf16; H100, docs/fidelity.md)."""
    measured = compare_images(baseline, image, baseline_latents, latents)
    ssim, distance = measured.ssim, measured.latent_rel_l2
    psnr = measured.to_dict()["psnr"]
    changed = None
    if recorded is not None and image_sha256 is not None and recorded.get("image_sha256"):
        changed = recorded["image_sha256"] != image_sha256
    band = calibration["band"] if calibration else None
    own_moved = (latent_distance(recorded_latents, latents)
                 if recorded_latents is not None and latents is not None else None)
    # The own-output distance replaces the distance to bf16 in the latent criterion.
    own_rule = own_moved is not None and band is not None and band.get("latent_rel_l2") is not None
    to_bf16 = None if own_rule else distance
    spread = ((calibration.get("spread") or {}).get(stack_name) if calibration and stack_name else None) or {}
    if own_rule:  # changed: moved more than the stack's own build-to-build spread (FP8 at 512 is not bit-exact)
        changed = own_moved > 3 * spread.get("latent_rel_l2", 0.0)
    if band and lossless and floor > band["ssim"]:
        floor, floor_source = band["ssim"], f"lossless band of the calibration (tighter {floor_source} set aside)"
    reasons = [f"SSIM {ssim:.5f} below the floor {floor} ({floor_source})"] if ssim < floor else []
    notes = []
    own_line = (f"latents moved {own_moved:.2e} from this stack's recorded output; an exact-math change moves "
                f"them at most {band['latent_rel_l2']:.2e}") if own_rule else None
    own_out = own_rule and own_moved > band["latent_rel_l2"]
    # H100: compiled stacks rebuilt on another machine moved 3.7e-3 (compile) to 5.6e-3 (FP8) from
    # their recorded output with no code change; only bf16 eager was bit-identical.
    yours = ("if the change is yours, update the baselines on purpose" if stack_name in (None, BASELINE) else
             "if the change is yours, update the baselines on purpose (compiled stacks also move "
             "from one machine to another)")
    if calibration is None:
        notes.append("not calibrated for these weights on this GPU: judged against the floor alone "
                     "(flux-perf calibrate proposes a band and tolerances)")
    elif lossless:
        outside = _outside_band(ssim, psnr, to_bf16, band) + ([own_line] if own_out else [])
        if outside:
            reasons.append("outside the lossless band: " + ", ".join(outside))
        elif changed or (changed is None and psnr is not None and recorded is None):
            notes.append(f"output changed within the lossless band; {yours}"
                         + (f" ({own_line})" if own_rule else ""))
    elif recorded is None:
        notes.append("no recorded fidelity for this stack: judged against the floor alone "
                     "(the sanctioned update records it)")
    else:
        moved = _moved(ssim, psnr, to_bf16, recorded, fidelity_tolerance(recorded, band, spread))
        moved += [own_line] if own_out else []
        if moved:
            reasons.append("fidelity moved beyond its tolerance: " + ", ".join(moved))
        elif changed:
            notes.append(f"output changed within the stack's fidelity tolerance; {yours}"
                         + (f" ({own_line})" if own_rule else ""))
    return FidelityResult("fail" if reasons else "pass", ssim, psnr, distance, floor, floor_source, baseline_path,
                          message="; ".join(notes) or None, stale=list(stale), reasons=reasons, recorded=recorded,
                          calibration=calibration, changed=changed, own_latent_moved=own_moved)


def judge_target(median_s: float, target_s: float | None) -> dict | None:
    """The guide's target for a scenario: met or not, and by how much. Reported, never a gate
    unless the run asks for it (`--flux-enforce-targets`)."""
    if target_s is None:
        return None
    return {"seconds": target_s, "met": median_s <= target_s, "gap_s": median_s - target_s}
