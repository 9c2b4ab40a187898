"""The fidelity judge: a case's output against the bf16 baseline of its scenario.

The floor of budgets.toml is the outer bound of every stack. With a calibration of these
weights on this GPU, a lossless stack (bf16 included) must stay inside the measured lossless
band: a change within it passes and says so, a break outside it fails. A lossy stack must stay
within its tolerance of the fidelity recorded by the last sanctioned update. A hand floor
tighter than the calibrated band (bf16's 0.9999) yields to the band.

Where the update recorded the stack's own final latents (bf16's are the baseline's), the latent
criterion is how far the output moved from them, held to the band: a change on top of a stack
moves it from where it was by about what the change moves bf16, while distances to bf16 add up
and blur (an exact attention-kernel change on a compiled stack lands as far from bf16 as 1 %
noise on eager bf16; H100, docs/fidelity.md).

A case with no band (no calibration for its scenario) or, for a lossy stack, no recorded fidelity
is judged by the floor alone: that is a gap, reported, and a failure under --flux-strict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum

import numpy as np

from ..components.stacks import BASELINE
from ..store.baselines import png_sha256
from ..store.entries import Band, FidelityEntry, Spread
from ..store.references import BASELINE_IMAGE, CALIBRATION, FIDELITY, References
from .images import Fidelity, compare_images, latent_distance


class FidelityVerdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"  # no baseline to judge against, or a broken reference: never a pass
    UPDATED = "updated"  # a sanctioned update wrote this case's baseline
    GAP = "gap"  # within the floor, but the floor was all there was to judge by: never a pass


@dataclass(frozen=True)
class FidelityResult:
    verdict: FidelityVerdict
    ssim: float | None = None
    psnr: float | None = None  # None: identical images
    latent_rel_l2: float | None = None
    floor: float | None = None
    floor_source: str | None = None
    baseline: str | None = None
    evidence: str | None = None  # side-by-side PNG written on failure
    message: str | None = None
    stale: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()  # why it failed, one line per broken bound
    recorded: FidelityEntry | None = None  # the stack's fidelity at the last sanctioned update
    band: Band | None = None
    changed: bool | None = None  # the output differs from the recorded one (None: nothing recorded)
    own_latent_moved: float | None = None  # latent distance to the stack's own recorded output
    gap: str | None = None  # judged by the floor alone, and why
    strict: bool = False
    # The comparison judged (SSIM map included): the failure's evidence is drawn from it, never recomputed.
    comparison: Fidelity | None = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.verdict in (FidelityVerdict.FAIL, FidelityVerdict.ERROR) or (
            self.strict and self.verdict is FidelityVerdict.GAP)

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k not in ("recorded", "band", "comparison")}
        data.update(verdict=self.verdict.value, stale=list(self.stale), reasons=list(self.reasons),
                    recorded=self.recorded.to_json() if self.recorded else None,
                    band=asdict(self.band) if self.band else None, failed=self.failed)
        return data


def fidelity_tolerance(recorded: FidelityEntry, band: Band, spread: Spread | None = None) -> dict:
    """How far a lossy stack's fidelity may move from its recorded value: as far as a lossless
    change (one at the edge of the band) on top of it would move it, or 3x its own run-to-run
    spread if that is larger. Errors add: SSIM distances roughly, squared latent distances and
    PSNR's mean squared errors exactly for independent errors."""
    spread = spread or Spread()
    tolerance = {"ssim": max(1 - band.ssim, 3 * spread.ssim)}
    if band.psnr is not None and recorded.psnr is not None:
        drop = 10 * math.log10(1 + 10 ** ((recorded.psnr - band.psnr) / 10))
        tolerance["psnr"] = max(drop, 3 * spread.psnr)
    if band.latent_rel_l2 is not None and recorded.latent_rel_l2 is not None:
        old = recorded.latent_rel_l2
        tolerance["latent_rel_l2"] = max(math.hypot(old, band.latent_rel_l2) - old, 3 * spread.latent_rel_l2)
    return tolerance


def _outside_band(ssim: float, psnr: float | None, distance: float | None, band: Band) -> list[str]:
    out = []
    if ssim < band.ssim:
        out.append(f"SSIM {ssim:.5f} < {band.ssim:.5f}")
    if band.psnr is not None and psnr is not None and psnr < band.psnr:
        out.append(f"PSNR {psnr:.2f} dB < {band.psnr:.2f} dB")
    if band.latent_rel_l2 is not None and distance is not None and distance > band.latent_rel_l2:
        out.append(f"latent distance {distance:.2e} > {band.latent_rel_l2:.2e}")
    return out


def _moved(ssim: float, psnr: float | None, distance: float | None, recorded: FidelityEntry,
           tolerance: dict) -> list[str]:
    out = []
    if recorded.ssim - ssim > tolerance["ssim"]:
        out.append(f"SSIM {recorded.ssim:.5f} -> {ssim:.5f} (tolerance {tolerance['ssim']:.5f})")
    if "psnr" in tolerance and psnr is not None and recorded.psnr - psnr > tolerance["psnr"]:
        out.append(f"PSNR {recorded.psnr:.2f} -> {psnr:.2f} dB (tolerance {tolerance['psnr']:.2f} dB)")
    if "latent_rel_l2" in tolerance and distance is not None and \
            distance - recorded.latent_rel_l2 > tolerance["latent_rel_l2"]:
        out.append(f"latent distance {recorded.latent_rel_l2:.2e} -> {distance:.2e} "
                   f"(tolerance {tolerance['latent_rel_l2']:.2e})")
    return out


@dataclass
class _Judgement:
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gap: str | None = None

    @property
    def verdict(self) -> FidelityVerdict:
        return FidelityVerdict.FAIL if self.reasons else FidelityVerdict.GAP if self.gap else FidelityVerdict.PASS


def judge_fidelity(image: np.ndarray, latents: np.ndarray | None, refs: References, *, floor: float, floor_source: str,
                   lossless: bool, strict: bool = False, compared: Fidelity | None = None,
                   calibrate: str = "flux-perf baselines update --missing") -> FidelityResult:
    """`image` (and its final latents) against its case's references; `compared`: the update's comparison;
    `calibrate`: the command that calibrates the scenario where the run looks (suite/hints.py)."""
    if refs.baseline is None:
        problem = refs.problems.get(BASELINE_IMAGE) or "no bf16 baseline for this scenario"
        return FidelityResult(FidelityVerdict.ERROR, message=problem, strict=strict)
    broken = [refs.problems[part] for part in (FIDELITY, CALIBRATION) if part in refs.problems]
    if broken:
        return FidelityResult(FidelityVerdict.ERROR, message="; ".join(broken), strict=strict)
    baseline, recorded = refs.baseline, refs.fidelity
    measured = compared if compared is not None else compare_images(baseline.image, image, baseline.latents, latents)
    ssim, distance, psnr = measured.ssim, measured.latent_rel_l2, measured.to_dict()["psnr"]
    band = refs.calibration.band if refs.calibration else None
    own_moved = latent_distance(refs.own_latents, latents) if refs.own_latents is not None and latents is not None \
        else None
    own_rule = own_moved is not None and band is not None and band.latent_rel_l2 is not None
    changed = recorded.image_sha256 != png_sha256(image) if recorded is not None and recorded.image_sha256 else None
    spread = refs.spread or Spread()
    if own_rule:  # changed: moved more than the stack's own build-to-build spread (FP8 at 512 is not bit-exact)
        changed = own_moved > 3 * spread.latent_rel_l2
    if band and lossless and floor > band.ssim:
        floor, floor_source = band.ssim, f"lossless band of the calibration (tighter {floor_source} set aside)"
    verdict = _Judgement([f"SSIM {ssim:.5f} below the floor {floor} ({floor_source})"] if ssim < floor else [])
    own_line = (f"latents moved {own_moved:.2e} from this stack's recorded output; an exact-math change moves "
                f"them at most {band.latent_rel_l2:.2e}") if own_rule else None
    own_out = own_rule and own_moved > band.latent_rel_l2
    # H100: compiled stacks rebuilt on another machine moved 3.7e-3 (compile) to 5.6e-3 (FP8) from
    # their recorded output with no code change; only bf16 eager was bit-identical.
    yours = ("if the change is yours, update the baselines on purpose" if refs.stack == BASELINE else
             "if the change is yours, update the baselines on purpose (compiled stacks also move "
             "from one machine to another)")
    detail = f" ({own_line})" if own_rule else ""
    to_bf16 = None if own_rule else distance  # the own-output distance replaces the distance to bf16
    if band is None:
        verdict.gap = (f"no fidelity calibration for {refs.key.scenario_id} on this GPU and weights: judged against "
                       f"the floor alone (calibrate it with `{calibrate}`)")
    elif lossless:
        outside = _outside_band(ssim, psnr, to_bf16, band) + ([own_line] if own_out else [])
        if outside:
            verdict.reasons.append("outside the lossless band: " + ", ".join(outside))
        elif changed or (changed is None and psnr is not None and recorded is None):
            verdict.notes.append(f"output changed within the lossless band; {yours}{detail}")
    elif recorded is None:
        verdict.gap = (f"no recorded fidelity for {refs.stack} at {refs.key.scenario_id}: judged against the floor "
                       "alone (the sanctioned update records it)")
    else:
        moved = _moved(ssim, psnr, to_bf16, recorded, fidelity_tolerance(recorded, band, refs.spread))
        moved += [own_line] if own_out else []
        if moved:
            verdict.reasons.append("fidelity moved beyond its tolerance: " + ", ".join(moved))
        elif changed:
            verdict.notes.append(f"output changed within the stack's fidelity tolerance; {yours}{detail}")
    return FidelityResult(
        verdict.verdict, ssim, psnr, distance, floor, floor_source,
        str(baseline.path), message="; ".join(verdict.notes + ([verdict.gap] if verdict.gap else [])) or None,
        stale=tuple(refs.stale_of(BASELINE_IMAGE, FIDELITY, CALIBRATION)), reasons=tuple(verdict.reasons),
        recorded=recorded, band=band, changed=changed, own_latent_moved=own_moved, gap=verdict.gap, strict=strict,
        comparison=measured)
