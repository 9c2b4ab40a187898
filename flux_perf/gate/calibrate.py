"""`flux-perf calibrate`: measure, for the GPU and weights at hand, how far exact-math variants
move the output (the lossless band), how much each stack's fidelity varies between fresh builds
(its spread), and where planted breaks land; propose the band, show which metric separates the
breaks best, and write it to the baseline store only when asked.

Every distance is to the bf16 baseline the gate uses (the stored one; a fresh bf16 output when
none is stored yet). Distances: 1 - SSIM, the mean squared error behind PSNR, the relative L2 of
the final latents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from ..components.stacks import BASELINE, parse_stack
from ..instrument.runner import CaseRunner, with_injection
from ..model.scenarios import Scenario
from ..store.baselines import BaselineError, BaselineKey, BaselineStore
from ..store.entries import Band, CalibrationEntry, Spread
from ..store.provenance import Provenance, component_code
from .images import Fidelity, compare_images

# Exact-math variants of bf16: other attention kernels and compiled code, same arithmetic.
LOSSLESS_CUDA = ("attn-cudnn", "attn-flash-sdpa", "attn-efficient", "compile-regional")
LOSSLESS_CPU = ("fused-qkv",)
BREAKS = ("noise:0.01", "wrong-shift")
# Each metric as a distance from the reference (0: identical): 1 - SSIM, PSNR's mean squared
# error (over 255^2), the latent distance. The band turns them back into the gate's units.
DISTANCES = ("1-ssim", "mse", "latent_rel_l2")
METRIC_NAMES = {"1-ssim": "SSIM", "mse": "PSNR", "latent_rel_l2": "latent distance"}  # as users read them
MARGIN = 1.5  # the band reaches 1.5x the farthest lossless variant, or less where a break lies closer


@dataclass
class Variant:
    name: str
    kind: str  # "lossless" | "stack" | "break"
    metrics: list[dict] = field(default_factory=list)  # one per build
    error: str | None = None

    @property
    def worst(self) -> dict | None:
        """The build farthest from the reference, metric by metric."""
        if not self.metrics:
            return None
        return {name: max(m[name] for m in self.metrics) for name in DISTANCES}

    @property
    def spread(self) -> dict:
        """How far the metrics moved between builds, in the gate's units: SSIM, PSNR dB, latent distance."""
        def width(values):
            return max(values) - min(values)

        psnrs = [-10 * math.log10(m["mse"]) for m in self.metrics if m["mse"] > 0]
        return {"ssim": width([m["1-ssim"] for m in self.metrics]),
                "psnr": width(psnrs) if len(psnrs) == len(self.metrics) else 0.0,
                "latent_rel_l2": width([m["latent_rel_l2"] for m in self.metrics])}


def distances(fidelity: Fidelity) -> dict:
    """Each metric as a distance from the reference (DISTANCES)."""
    return {"1-ssim": 1.0 - fidelity.ssim,
            "mse": 0.0 if math.isinf(fidelity.psnr) else 10 ** (-fidelity.psnr / 10),
            "latent_rel_l2": fidelity.latent_rel_l2 or 0.0}


def _extremes(lossless: list[Variant], breaks: list[Variant]) -> dict:
    """metric -> (farthest lossless variant, nearest break or None when no break was measured)."""
    return {name: (max((v.worst[name] for v in lossless if v.worst), default=0.0),
                   min((min(m[name] for m in v.metrics) for v in breaks if v.metrics), default=None))
            for name in DISTANCES}


def band_edges(lossless: list[Variant], breaks: list[Variant] = (), margin: float = MARGIN) -> dict:
    """metric -> (edge as a distance, "middle" | "margin"). The edge is `margin` times the
    farthest lossless variant or, where the planted breaks lie closer than that, the geometric
    middle between the farthest variant and the nearest break, so both sit the same factor from
    it. (On the synthetic weights the H100 put 1 % noise only 1.3x beyond a compiled bf16: a 1.5x
    margin let it through.) An edge of 0: no variant moved the metric."""
    edges = {}
    for name, (far, near) in _extremes(lossless, breaks).items():
        edge = (margin ** 2 if name == "mse" else margin) * far  # a squared error scales as margin^2
        if near is not None and 0 < far < near < edge * edge / far:
            edges[name] = (math.sqrt(far * near), "middle")
        else:
            edges[name] = (edge, "margin")
    return edges


def propose_band(lossless: list[Variant], margin: float = MARGIN, breaks: list[Variant] = ()) -> dict:
    """The band in the gate's units (band_edges); a metric no variant moved (all identical) gets
    no band (any change of it is outside, which SSIM already judges)."""
    edge = {name: value for name, (value, _) in band_edges(lossless, breaks, margin).items()}
    band = {"ssim": 1.0 - edge["1-ssim"]}
    band["psnr"] = -10 * math.log10(edge["mse"]) if edge["mse"] > 0 else None
    band["latent_rel_l2"] = edge["latent_rel_l2"] if edge["latent_rel_l2"] > 0 else None
    return band


def separation(lossless: list[Variant], breaks: list[Variant]) -> dict:
    """Per metric: the nearest break's distance over the farthest lossless variant's. Above 1
    the metric tells every planted break from every exact-math change; the larger, the safer."""
    out = {}
    for name, (far, near) in _extremes(lossless, breaks).items():
        if near is None:
            out[name] = None  # no break measured
        elif far > 0:
            out[name] = near / far
        else:  # every lossless variant was identical: any break that moved this metric stands out
            out[name] = math.inf if near > 0 else 0.0
    return out


@dataclass
class ScenarioCalibration:
    scenario: Scenario
    reference: str  # where the bf16 reference came from
    variants: list[Variant]
    margin: float
    cold_compiles: bool = False  # each stack build compiled from scratch (its spread includes the compiler's)

    def of_kind(self, kind: str) -> list[Variant]:
        return [v for v in self.variants if v.kind == kind]

    def unusable(self) -> str | None:
        """Why this proposal must not be stored: a lossless variant or planted break that failed would
        place the band without it (tighter or looser than what was measured)."""
        failed = [f"{v.name} ({v.error})" for v in self.variants if v.error and v.kind != "stack"]
        return f"{', '.join(failed)} failed, so the band would be placed without them" if failed else None

    def unseparated(self) -> str | None:
        """Why the band tells no planted break from the exact-math variants: no metric puts every
        break beyond every lossless variant, so a band placed from them would pass the breaks. Not
        when no lossless variant moved the output: the band is then exact (a break that moved
        nothing, wrong-shift at one step, no band can see)."""
        known = {k: v for k, v in self.separation.items() if v is not None}
        widths = [far for far, _ in _extremes(self.of_kind("lossless"), self.of_kind("break")).values()]
        if not known or max(known.values()) > 1 or not any(widths):
            return None
        names = [", ".join(v.name for v in self.of_kind(kind)) for kind in ("break", "lossless")]
        return (f"no metric separates the breaks ({names[0]}) from the lossless variants ({names[1]}): "
                + ", ".join(f"{METRIC_NAMES[k]} {v:.2f}x" for k, v in known.items())
                + "; a band placed from them would pass the breaks")

    def refused(self) -> str | None:
        """Why this band must be neither stored nor trusted: a variant failed, or it separates nothing."""
        return self.unusable() or self.unseparated()

    def spreads_missing(self) -> list[str]:
        """The stacks whose build-to-build spread failed to measure: the gate then allows them none
        (the band alone), never more."""
        return [v.name for v in self.variants if v.error and v.kind == "stack"]

    @property
    def band(self) -> dict:
        return propose_band(self.of_kind("lossless"), self.margin, self.of_kind("break"))

    @property
    def band_rule(self) -> dict:
        """Per metric, how the band's edge was placed: "middle" (between lossless and breaks) or "margin"."""
        return {name: rule for name, (_, rule) in band_edges(self.of_kind("lossless"), self.of_kind("break"),
                                                             self.margin).items()}

    @property
    def separation(self) -> dict:
        return separation(self.of_kind("lossless"), self.of_kind("break"))

    def entry(self, driver: str | None = None) -> CalibrationEntry:
        """The store's entry: the band, each stack's spread with the stack key it was measured on,
        the measurements behind them, and the provenance (the code of every measured stack's
        components included, so a changed component makes its spread stale)."""
        measured = [v for v in self.variants if v.kind == "stack" and len(v.metrics) > 1]
        stacks = {v.name: parse_stack(v.name) for v in measured}
        code = {spec: digest for stack in stacks.values() for spec, digest in component_code(stack.components).items()}
        band = self.band
        details = {"margin": self.margin, "band_rule": self.band_rule, "cold_compiles": self.cold_compiles,
                   "separation": self.separation, "reference": self.reference,
                   "variants": {v.name: {"kind": v.kind, "distances": v.metrics, "error": v.error}
                                for v in self.variants}}
        return CalibrationEntry(Band(band["ssim"], band["psnr"], band["latent_rel_l2"]),
                                {v.name: Spread(**v.spread) for v in measured},
                                {name: stack.key for name, stack in stacks.items()},
                                Provenance.now(driver, code), details)


@contextmanager
def compiled_from_scratch():
    """No compiled code or compile cache from an earlier build: inductor traces, compiles and
    autotunes again. (H100: compiled stacks rebuilt on another machine moved their latents
    3.7-5.6e-3 where rebuilds in one process, caches warm, moved them by 3e-5 at most.)"""
    import torch

    torch._dynamo.reset()
    with torch._inductor.config.patch(force_disable_caches=True):
        yield


def _output(runner: CaseRunner, stack_spec: str, scenario: Scenario, plant: str | None = None, *,
            cold: bool = False):
    """The steady-state output of a fresh build (the first call may compile or capture)."""
    runner.release()
    stack = with_injection(parse_stack(stack_spec), None, plant)
    with compiled_from_scratch() if cold else nullcontext():
        case = runner.case(stack, scenario)
        case.round()
    return case.round()


def calibrate_scenario(runner: CaseRunner, store: BaselineStore, key: BaselineKey, scenario: Scenario, *,
                       lossless: list[str], stacks: list[str], breaks: list[str], repeats: int,
                       margin: float = MARGIN, log: Callable[[str], None] = print,
                       cold_compiles: bool = False) -> ScenarioCalibration:
    fresh = _output(runner, BASELINE, scenario)
    try:
        stored = store.load_baseline(key, scenario)
        reference_image, reference_latents, reference = stored.image, stored.latents, f"stored baseline {key}"
        if reference_latents is None:
            log(f"  the stored baseline of {key} has no latents (made before they were kept): latent distances "
                "are against a fresh bf16 output; re-record the baselines")
            reference_latents = fresh.latents
    except BaselineError as error:
        log(f"  {error}: calibrating against a fresh bf16 output")
        reference_image, reference_latents, reference = fresh.image, fresh.latents, "fresh bf16 output"

    def measure(name: str, kind: str, builds: int, stack_spec: str, plant: str | None = None) -> Variant:
        variant = Variant(name, kind)
        for build in range(builds):
            try:
                generation = (fresh if (name, build) == (BASELINE, 0) else
                              _output(runner, stack_spec, scenario, plant, cold=cold_compiles and kind == "stack"))
            except Exception as error:  # noqa: BLE001 - one variant failing must not end the calibration
                variant.error = f"{type(error).__name__}: {error}"
                log(f"  {name}: FAILED {variant.error}")
                runner.release()
                return variant
            variant.metrics.append(distances(compare_images(reference_image, generation.image, reference_latents,
                                                            generation.latents)))
        worst = variant.worst
        log(f"  {kind:<8} {name:<28} 1-SSIM {worst['1-ssim']:.2e}  MSE {worst['mse']:.2e}  "
            f"latent {worst['latent_rel_l2']:.2e}" + (f"  ({builds} builds)" if builds > 1 else ""))
        return variant

    variants = [measure(BASELINE, "lossless", 2, BASELINE)]  # bf16 against itself: determinism
    variants += [measure(spec, "lossless", 1, spec) for spec in lossless]
    variants += [measure(spec, "stack", repeats, spec) for spec in stacks]
    variants += [measure(spec, "break", 1, BASELINE, plant=spec) for spec in breaks]
    runner.release()
    return ScenarioCalibration(scenario, reference, variants, margin, cold_compiles)


def restated(entry: CalibrationEntry, scenario: Scenario, margin: float,
             again: str = "flux-perf calibrate --write") -> ScenarioCalibration:
    """A stored calibration re-proposed from the distances it holds (no GPU): for a changed
    margin or rule of the band, without measuring again. `again`: the caller's command that
    measures it anew where it is stored."""
    details = entry.details
    variants = [Variant(name, v["kind"], [dict(m) for m in v.get("distances") or []], v.get("error"))
                for name, v in (details.get("variants") or {}).items()]
    if not any(v.kind == "lossless" and v.metrics for v in variants):
        raise BaselineError(f"the stored calibration of {scenario.id} holds no lossless measurements to restate: "
                            f"measure it again ({again})")
    return ScenarioCalibration(scenario, details.get("reference", "stored calibration"), variants, margin,
                               bool(details.get("cold_compiles")))


def _rule_text(result: ScenarioCalibration) -> str:
    middle = [METRIC_NAMES[k] for k, rule in result.band_rule.items() if rule == "middle"]
    text = f"{result.margin}x the farthest exact-math variant"
    if not middle:
        return text
    if len(middle) == len(METRIC_NAMES):
        return "each edge midway (geometric) between the farthest exact-math variant and the nearest planted break"
    return f"{', '.join(middle)}: midway between the farthest exact-math variant and the nearest break; else {text}"


def format_calibration(result: ScenarioCalibration) -> str:
    band, sep = result.band, result.separation
    lines = [f"{result.scenario.id} (against the {result.reference}):",
             f"  proposed lossless band: SSIM >= {band['ssim']:.6f}"
             + (f", PSNR >= {band['psnr']:.2f} dB" if band["psnr"] else "")
             + (f", latent distance <= {band['latent_rel_l2']:.2e}" if band["latent_rel_l2"] else "")
             + f" ({_rule_text(result)})"]
    known = {k: v for k, v in sep.items() if v is not None}
    if known:
        best = max(known, key=lambda k: known[k])
        lines.append("  separation (nearest break / farthest lossless variant): "
                     + ", ".join(f"{METRIC_NAMES[k]} {v:.1f}x" for k, v in known.items())
                     + f"; best: {METRIC_NAMES[best]}" + ("" if known[best] > 1 else " (NO metric separates them)"))
    for variant in result.variants:
        if variant.kind == "stack" and variant.metrics and len(variant.metrics) > 1:
            spread = variant.spread
            how = " compiled from scratch" if result.cold_compiles else ""
            lines.append(f"  {variant.name}: spread over {len(variant.metrics)} builds{how}: 1-SSIM {spread['ssim']:.1e}, "
                         f"latent {spread['latent_rel_l2']:.1e}")
    return "\n".join(lines)


def runnable(specs: list[str], caps) -> tuple[list[str], list[str]]:
    """The specs this machine can run, and why the others cannot."""
    kept, skipped = [], []
    for spec in specs:
        reason = parse_stack(spec).unmet(caps)
        if reason:
            skipped.append(f"{spec}: {reason}")
        else:
            kept.append(spec)
    return kept, skipped

