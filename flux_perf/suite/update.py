"""The sanctioned update of one case: the entries its measurement records as the new references
(the store writes them, store/references.write_update). Only ever on purpose: under
--flux-update-baselines or `flux-perf baselines update`, never under CI unless forced."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..components.stacks import BASELINE, Stack
from ..gate.images import Fidelity, compare_images
from ..instrument.machine import Machine
from ..instrument.measure import MEASUREMENT_VERSION
from ..instrument.rounds import summarize
from ..instrument.runner import Measured
from ..model.scenarios import Scenario
from ..store.baselines import png_sha256
from ..store.entries import FidelityEntry, LatencyEntry
from ..store.provenance import Provenance
from ..store.references import ReferenceUpdate, References


def refuse_disturbed(disturbance: Sequence[str]) -> str | None:
    """Why rounds timed on a disturbed machine (another process on the GPU, a thermal or hardware
    slow-down, host CPU contention: telemetry.DISTURBING) may not be recorded: as with an injected
    slow-down, they would become the reference every later run is judged against."""
    if not disturbance:
        return None
    return (f"refusing to record references from disturbed rounds ({'; '.join(disturbance)}): they would become "
            "the reference every later run is judged against. Nothing was written; re-run the update on a quiet "
            "machine")


def refuse_unmatched_latents(stack: Stack, scenario: Scenario, latents: np.ndarray | None, old: References,
                             record_command: Callable[[str, str], str]) -> str | None:
    """Why a stack's fidelity may not be recorded against bf16 latents of another shape than its own
    (recorded for another model or scenario shape): the judge refuses such a baseline
    (store.references.check_latent_shapes), so the entry would never be usable. bf16 replaces them."""
    recorded = old.baseline.latents if old.baseline is not None else None
    if stack.name == BASELINE or recorded is None or latents is None or recorded.shape == latents.shape:
        return None
    return (f"refusing to record {stack.name} at {scenario.id}: the latents of the bf16 baseline "
            f"({old.baseline.path}) are {recorded.shape}, this run's final latents {latents.shape}, so no fidelity "
            f"the gate accepts can be measured against them. Nothing was written; re-record bf16 first with "
            f"`{record_command(BASELINE, scenario.id)}`, then this stack with "
            f"`{record_command(stack.name, scenario.id)}`")


def _fidelity(stack: Stack, image: np.ndarray, latents: np.ndarray | None, reference: np.ndarray,
              reference_latents: np.ndarray | None, lossless: bool,
              provenance: Provenance) -> tuple[FidelityEntry, Fidelity]:
    measured = compare_images(reference, image, reference_latents, latents)
    return FidelityEntry(measured.ssim, measured.to_dict()["psnr"], measured.latent_rel_l2, png_sha256(image),
                         stack.key, lossless, provenance), measured


def reference_update(stack: Stack, scenario: Scenario, measured: Measured, clock: float | None, old: References,
                     provenance: Provenance, machine: Machine) -> tuple[ReferenceUpdate, Fidelity | None]:
    """The new references of (stack, scenario): its rounds, and its output against the bf16 baseline
    (for bf16 itself: the baseline, which it becomes). With them the comparison that fidelity was
    measured from (None where none was made), so the judge need not compute the SSIM again."""
    timed, samples = measured.timed, list(measured.samples_s)
    wall = summarize(samples)
    latency = LatencyEntry(wall.median, tuple(samples), stack.key, provenance, wall.ci_low, wall.ci_high, clock,
                           MEASUREMENT_VERSION)
    if stack.name == BASELINE:
        record = {"scenario": scenario.to_dict(), "stack": BASELINE, "model": machine.source.label,
                  "gpu": machine.gpu.to_dict() if machine.gpu else {"name": machine.gpu_name},
                  "latency": timed.wall.to_dict(), "deterministic_across_rounds": timed.deterministic,
                  "provenance": provenance.to_json()}
        # bf16 becomes the baseline: identical to itself by definition, no comparison to compute.
        fidelity = FidelityEntry(1.0, None, 0.0 if timed.latents is not None else None, png_sha256(timed.image),
                                 stack.key, True, provenance)
        return ReferenceUpdate(latency, fidelity, timed.latents, timed.image, record), None
    if old.baseline is None:  # no baseline yet: nothing to measure fidelity against
        return ReferenceUpdate(latency, None, timed.latents), None
    fidelity, compared = _fidelity(stack, timed.image, timed.latents, old.baseline.image, old.baseline.latents,
                                   measured.lossless, provenance)
    return ReferenceUpdate(latency, fidelity, timed.latents), compared
