"""One case's references, loaded once: the bf16 baseline of its scenario, the stack's recorded
latency and fidelity and own final latents, and the scenario's fidelity calibration, each with
what is missing (and the command that records it) and why it may be stale. The judges take this
whole; the sanctioned update writes a new set through the store in one go.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..components.stacks import BASELINE, Stack
from ..model.scenarios import Scenario
from .baselines import Baseline, BaselineKey, BaselineMissing, BaselineStore
from .entries import CALIBRATE_HINT, UPDATE_HINT, BaselineError, CalibrationEntry, FidelityEntry, LatencyEntry, Spread
from .provenance import Provenance, distribution_of, stale_reasons

LATENCY, BASELINE_IMAGE, FIDELITY, CALIBRATION = "latency", "baseline", "fidelity", "calibration"


@dataclass(frozen=True)
class References:
    key: BaselineKey
    stack: str
    baseline: Baseline | None = None
    latency: LatencyEntry | None = None
    fidelity: FidelityEntry | None = None
    own_latents: np.ndarray | None = None  # bf16's are the baseline's
    calibration: CalibrationEntry | None = None
    problems: dict[str, str] = field(default_factory=dict)  # part -> why it is missing or unusable
    stale: dict[str, tuple[str, ...]] = field(default_factory=dict)  # part -> why it may no longer hold

    @property
    def spread(self) -> Spread | None:
        return self.calibration.spread.get(self.stack) if self.calibration else None

    def stale_of(self, *parts: str) -> list[str]:
        return [reason for part in parts for reason in self.stale.get(part, ())]


def stack_packages(stack: Stack) -> list[str]:
    """The installed distributions the stack's components import (their versions matter)."""
    return [name for c in stack.components for p in c.packages if (name := distribution_of(p))]


def _latency_stale(entry: LatencyEntry, now: Provenance, stack: Stack, packages, measurement_version: int,
                   again: str) -> list[str]:
    reasons = stale_reasons(entry.provenance, now, packages)
    if not entry.provenance.software:
        reasons.append("recorded without software versions (before flux-perf recorded them)")
    if entry.measurement_version != measurement_version:
        reasons.append(f"timed by measurement method {entry.measurement_version}, now {measurement_version}")
    return reasons + components_changed(entry.stack, stack.key, again)


def components_changed(recorded_key: str, stack_key: str, again: str) -> list[str]:
    """A named stack whose definition changed since its reference was recorded (e.g. `fast` gained
    a component): the reference describes other code, so say so beside the verdict, with `again`,
    the run's command that records it."""
    if recorded_key and recorded_key != stack_key:
        return [f"recorded for the components {recorded_key}, the stack is now {stack_key}: "
                f"record it again on purpose with `{again}`"]
    return []


def _calibration_stale(entry: CalibrationEntry, now: Provenance, stack: Stack, packages,
                       record_command: Callable[..., str], scenario_id: str) -> list[str]:
    reasons = [f"calibration: {r}" for r in stale_reasons(entry.provenance, now, packages)]
    # Every spread it holds is measured again: `calibrate --write` replaces the scenario's entry whole.
    again = record_command(",".join(sorted(entry.spread)), scenario_id, "calibrate --write")
    measured_on = entry.stacks.get(stack.name)
    if stack.name in entry.spread and measured_on and measured_on != stack.key:
        reasons.append(f"the calibration measured {stack.name}'s spread on the components {measured_on}, "
                       f"the stack is now {stack.key}: calibrate again with `{again}`")
    elif stack.name in entry.spread and not measured_on:
        reasons.append(f"the calibration kept no record of the components {stack.name}'s spread was measured on "
                       f"(store schema 1): calibrate again with `{again}`")
    return reasons


def _load_part(problems: dict, part: str, load: Callable, missing: str):
    """One part of the references; what is missing or broken lands in `problems`."""
    try:
        value = load()
    except BaselineMissing:
        value = None
    except BaselineError as error:
        problems[part] = str(error)
        return None
    if value is None and missing:
        problems[part] = missing
    return value


def load_references(store: BaselineStore, key: BaselineKey, scenario: Scenario, stack: Stack, now: Provenance, *,
                    measurement_version: int, record_command: Callable[..., str]) -> References:
    """Everything recorded for (stack, scenario) on this GPU and weights, read once. `now` is the
    provenance of this run (with this stack's component code); `record_command(stack, scenario,
    action="baselines update")` the run's command that records a missing or stale part
    (suite/hints.case_command)."""
    problems: dict[str, str] = {}
    where = f"on {key.gpu_slug} with weights {key.fingerprint}"
    record = store.bf16_record(key)  # read once: the image's, and every table's placement check

    def table(name: str, only: str | None = stack.name) -> dict:
        return store.table(key, name, only, record)

    latency = _load_part(problems, LATENCY, lambda: table("latency.json").get(stack.name),
                         f"no recorded latency for {stack.name} at {scenario.id} {where}: record it with "
                         f"`{record_command(stack.name, scenario.id)}`")
    baseline = _load_part(problems, BASELINE_IMAGE, lambda: store.load_baseline(key, scenario, record),
                          f"no bf16 baseline image for {scenario.id} {where}: record it with "
                          f"`{record_command(BASELINE, scenario.id)}`")
    fidelity = _load_part(problems, FIDELITY, lambda: table("fidelity.json").get(stack.name), "")
    own = baseline.latents if baseline is not None and stack.name == BASELINE else None
    if fidelity is not None and stack.name != BASELINE:
        own = _load_part(problems, FIDELITY, lambda: store.read_latents(
            store.latents_path(key, stack.name), fidelity.latents_sha256,
            f"the recorded fidelity of {key} {stack.name}"), "")
    calibration = _load_part(problems, CALIBRATION, lambda: table("calibration.json", None).get("fidelity"), "")
    packages, again = stack_packages(stack), record_command(stack.name, scenario.id)
    stale = {
        LATENCY: tuple(_latency_stale(latency, now, stack, packages, measurement_version, again)) if latency else (),
        BASELINE_IMAGE: tuple(stale_reasons(baseline.provenance, now)) if baseline else (),
        FIDELITY: tuple(stale_reasons(fidelity.provenance, now, packages)
                        + components_changed(fidelity.stack, stack.key, again)) if fidelity else (),
        CALIBRATION: tuple(_calibration_stale(calibration, now, stack, packages, record_command, scenario.id))
        if calibration else (),
    }
    # A broken file's error names the bare update; this case's command records it where this run looks.
    for part, problem in problems.items():
        problems[part] = problem.replace(UPDATE_HINT, record_command(BASELINE if part == BASELINE_IMAGE
                                                                     else stack.name, scenario.id))
    if CALIBRATE_HINT in problems.get(CALIBRATION, ""):  # calibrate's default stacks, at this scenario
        problems[CALIBRATION] = problems[CALIBRATION].replace(CALIBRATE_HINT, record_command(
            "", scenario.id, "calibrate --write"))
    return References(key, stack.name, baseline, latency, fidelity, own, calibration, problems, stale)


def check_latent_shapes(store: BaselineStore, refs: References, latents: np.ndarray | None,
                        record_command: Callable[[str, str], str]) -> References:
    """Recorded latents of another shape than this run's final latents cannot be compared: a
    problem of the part that holds them (naming the file), so only the fidelity judgement of the
    case is an error, never the case (its latency stands). `record_command` as load_references'."""
    if latents is None:
        return refs
    problems, baseline, own = dict(refs.problems), refs.baseline, refs.own_latents

    def fix(stack: str) -> str:
        return f"re-record them with: {record_command(stack, refs.key.scenario_id)}"

    if baseline is not None and baseline.latents is not None and baseline.latents.shape != latents.shape:
        problems[BASELINE_IMAGE] = (f"latents {store.latents_path(refs.key)} are {baseline.latents.shape}, this "
                                    f"run's final latents {latents.shape}: " + fix(BASELINE))
        baseline = None
        own = None if refs.stack == BASELINE else own
    if own is not None and refs.stack != BASELINE and own.shape != latents.shape:
        problems[FIDELITY] = (f"latents {store.latents_path(refs.key, refs.stack)} are {own.shape}, this run's "
                              f"final latents {latents.shape}: " + fix(refs.stack))
        own = None
    if problems == refs.problems:
        return refs
    return replace(refs, baseline=baseline, own_latents=own, problems=problems)


@dataclass(frozen=True)
class ReferenceUpdate:
    """What a sanctioned update records for one case: the stack's latency and fidelity, and for
    bf16 the scenario's baseline image with its latents and provenance record."""

    latency: LatencyEntry
    fidelity: FidelityEntry | None
    latents: np.ndarray | None
    baseline_image: np.ndarray | None = None
    baseline_record: dict | None = None


def write_update(store: BaselineStore, old: References, update: ReferenceUpdate, *, force: bool) -> list[str]:
    """Write the update through the store; return one line per part saying what changed."""
    key, stack = old.key, old.stack
    lines = []
    if update.baseline_image is not None:
        path = store.write_baseline(key, update.baseline_image, update.latents, update.baseline_record or {},
                                    force=force)
        if old.baseline is None:
            what = "new"
        else:
            what = "replaced, " + ("identical pixels" if np.array_equal(old.baseline.image, update.baseline_image)
                                   else "pixels changed: re-record every stack's fidelity at this scenario")
        lines.append(f"{key}: baseline image {what} ({path.name})")
    store.write_latency(key, stack, update.latency, force=force)
    before = old.latency.median_s if old.latency else None
    new = update.latency.median_s
    change = f"{before:.3f} s -> {new:.3f} s ({new / before - 1:+.1%})" if before else f"new {new:.3f} s"
    lines.append(f"{key} {stack}: latency {change}")
    if update.fidelity is not None:
        store.write_fidelity(key, stack, update.fidelity, None if stack == BASELINE else update.latents, force=force)
        was = f"SSIM {old.fidelity.ssim:.5f} -> " if old.fidelity else "new: SSIM "
        distance = "" if update.fidelity.latent_rel_l2 is None else \
            f", latent distance {update.fidelity.latent_rel_l2:.2e}"
        lines.append(f"{key} {stack}: fidelity {was}{update.fidelity.ssim:.5f}{distance}")
    return lines
