"""A measuring session: orchestration only. For each (stack, scenario): load the case's references
once, have the case runner measure, hand the rounds and the references to the judges, record on
purpose only, and keep one typed record per case. One failing stack never takes the session down.

    options -> SuiteConfig -> FluxSession.case -> store.load_references -> CaseRunner.measure
            -> gate (latency, fidelity, target) -> [store.write_update] -> report.case_record
"""

from __future__ import annotations

import statistics
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch

from . import interrupts
from ..components.stacks import BASELINE, Stack
from .config import SuiteConfig
from .hints import bootstrap_command, case_command
from ..gate.budgets import LatencyBudget, load_budgets
from ..gate.fidelity import FidelityResult, FidelityVerdict, judge_fidelity
from ..gate.images import Fidelity, write_side_by_side
from ..gate.latency import (
    LatencyResult,
    Target,
    Verdict,
    decided,
    describe_disturbance,
    describe_warmup_drift,
    judge_latency,
    judge_target,
)
from ..instrument import distributed
from ..instrument.machine import Machine
from ..instrument.measure import MEASUREMENT_VERSION
from ..instrument.runner import CaseRunner, Measured, with_injection
from ..model.models import check_hub_source, resolve_model_source
from ..model.redact import scrub
from ..model.scenarios import Scenario
from ..report.judged import NotJudged, not_judged, pending
from ..report.records import CaseRecord, RunResults, case_record
from ..store.baselines import BaselineKey, BaselineStore
from ..store.provenance import Provenance, component_code, now_iso
from ..store.references import (
    LATENCY,
    References,
    check_latent_shapes,
    load_references,
    write_update,
)
from .update import reference_update, refuse_disturbed, refuse_unmatched_latents

CUT_SHORT = "interrupted"  # how the error of a case a signal stopped begins


@dataclass
class CaseResult:
    stack: Stack
    scenario: Scenario
    measured: Measured | None = None
    error: str | None = None
    latency: LatencyResult | None = None
    fidelity: FidelityResult | None = None
    target: Target | None = None
    profile_trace: str | None = None

    @property
    def id(self) -> str:
        return f"{self.stack.name}-{self.scenario.id}"

    @property
    def timed(self):
        return self.measured.timed if self.measured else None


class FluxSession:
    def __init__(self, config: SuiteConfig, log: Callable[[str], None] = print, *,
                 environment: list[dict] | None = None, command: str | None = None, judges: bool = True):
        # Under torchrun each rank measures on its own GPU (cuda:LOCAL_RANK).
        config = replace(config, device=distributed.init_if_launched(config.device))
        self.config = config
        self.log = log
        source = resolve_model_source(config.model, config.device)
        check_hub_source(source)  # a hub model this machine cannot get fails here, not in every case
        self.machine = Machine.detect(config.device, source)
        self.budgets = load_budgets(config.budgets_path)
        self.budgets.check_gpu(self.machine.gpu_name)
        if not config.update_baselines and (unbudgeted := self.budgets.unbudgeted(self.machine.gpu_name)):
            log(unbudgeted)
        self.store = BaselineStore(config.baselines_dir)
        if config.update_baselines:  # a broken table or a read-only folder: said before anything is built
            self.store.check_update(self.machine.slug, self.machine.fingerprint)
        self.runner = CaseRunner(source, config.device, inject_slowdown=config.inject_slowdown, plant=config.plant,
                                 log=log, scripted_seconds=config.scripted_clock)
        self.cases: dict[tuple[str, str], CaseResult] = {}
        self.records: dict[tuple[str, str], CaseRecord] = {}
        # (stack, scenario) -> why it cannot run on this machine; reported beside the results.
        self.skipped: dict[tuple[str, str], dict] = {}
        self.baseline_updates: list[str] = []
        self.started = now_iso()
        self.environment_report = environment  # what the guide's environment settings did
        self.command = command  # how this run was started, recorded in results.json
        self.interrupted: str | None = None
        self.not_selected: list[str] = []  # cases pytest's selection left out of this run
        # Nothing recorded for this GPU model and weights: every case fails, naming the bootstrap. On a
        # machine that cannot run the cases (no GPU) every case is skipped instead, and says why.
        self.bootstrap = not config.update_baselines and self.machine.unavailable() is None \
            and not self.store.has_references(self.machine.slug, self.machine.fingerprint)
        # `flux-perf run` judges nothing: there the hint is only how to record them.
        consequence = "every case fails until they are recorded" if judges else \
            "this run judges nothing against references, it only times the stack"
        self.unrecorded = (f"no references for {self.machine.gpu_name or self.machine.slug} with weights "
                           f"{self.machine.fingerprint} in {self.store.root}: {consequence}. Record them all "
                           "(references, images, latents, the fidelity calibration) "
                           f"with: {bootstrap_command(config)}") if self.bootstrap else None
        if self.unrecorded:
            log(self.unrecorded)
        # record_command(stack, scenario): the command that records a missing reference where this
        # run looks. A plain function handed to the store, not a method: the case's data flows one way.
        self.record_command = partial(case_command, config, self.bootstrap)

    # -- what can run ------------------------------------------------------------
    def skip_reason(self, stack: Stack) -> str | None:
        return self.machine.unavailable() or with_injection(stack, self.config.inject_slowdown, self.config.plant).unmet(self.machine.caps)

    def record_skip(self, stack: Stack, scenario: Scenario, reason: str) -> None:
        """Keep a case that could not run, with its reason, for the report."""
        self.skipped[(stack.name, scenario.id)] = {
            "stack": stack.name, "components": stack.describe(), "scenario": scenario.id, "reason": reason}

    def key(self, scenario: Scenario) -> BaselineKey:
        return BaselineKey(self.machine.slug, self.machine.fingerprint, scenario.id, self.machine.gpu_name)

    def references(self, stack: Stack, scenario: Scenario, now: Provenance, key: BaselineKey | None = None) -> References:
        """Everything recorded for the case, loaded once; `now` is this run's provenance for the stack."""
        return load_references(self.store, key or self.key(scenario), scenario, stack, now,
                               measurement_version=MEASUREMENT_VERSION, record_command=self.record_command)

    def provenance(self, stack: Stack) -> Provenance:
        driver = self.machine.gpu.driver_version if self.machine.gpu else None
        return Provenance.now(driver, component_code(stack.components))

    def latency_budgets(self, stack: Stack, scenario: Scenario, refs: References) -> list[LatencyBudget]:
        recorded = None if self.config.update_baselines else refs.latency
        return self.budgets.latency_budgets(self.machine.gpu_name, scenario.id, stack.name, recorded,
                                            tuple(refs.stale_of(LATENCY)))

    # -- one case -----------------------------------------------------------------
    def case(self, stack: Stack, scenario: Scenario, benchmark=None) -> CaseResult:
        """Measure (stack, scenario) once per session; later calls return the same result."""
        cache_key = (stack.name, scenario.id)
        if cache_key in self.cases:
            return self.cases[cache_key]
        result = CaseResult(stack=stack, scenario=scenario)
        self.cases[cache_key] = result
        self.machine = self.machine.with_ceilings(self.log)  # once, before the first model takes the memory
        try:
            self._measure_and_judge(result, benchmark)
        except torch.cuda.OutOfMemoryError as error:
            result.error = (
                f"out of memory running stack {stack.name} at {scenario.id}: {str(error).splitlines()[0]}. "
                f"Memory fallbacks: --flux-stacks '{stack.name}+vae-tiling' or '{stack.name}+model-cpu-offload'"
            )
            self.runner.release()
        except (Exception, SystemExit) as error:  # noqa: BLE001 - recorded, reported, and the session goes on
            # A library calling sys.exit() inside one case ends that case, not the run.
            what = f"the code called sys.exit({error.code!r})" if isinstance(error, SystemExit) else error
            result.error = scrub(f"{type(error).__name__}: {what}")  # recorded and printed: no token
            self.log(scrub("".join(traceback.format_exception(error)[-6:])))
            self.runner.release()
        except BaseException as error:  # Ctrl-C, a timeout's signal: never a clean-looking record
            result.error = f"{CUT_SHORT} ({interrupts.describe(error)}) before this case finished"
            self.interrupted = result.error
            self.records[cache_key] = self._record(result)
            raise
        if result.error:
            self.log(f"  FAILED: {result.error}")
        self.records[cache_key] = self._record(result)
        return result

    def _measure_and_judge(self, result: CaseResult, benchmark) -> None:
        """Everything the judges need is gathered before the measurement; after it the case's data
        flows one way: judges, the sanctioned update (on purpose only), the record."""
        stack, scenario, settings = result.stack, result.scenario, self.config.measure
        now = self.provenance(stack)
        refs = self.references(stack, scenario, now)
        budgets = self.latency_budgets(stack, scenario, refs)
        target_s = self.budgets.target(self.machine.gpu_name, scenario.id, stack.name)
        # The stack's own rules, whatever a test planted into it (--flux-plant): a plant is judged as the stack.
        floor = self.budgets.ssim_floor(stack.name, stack.lossless)
        main = distributed.is_main()  # every rank holds the same image; one judges and writes
        shown = ", ".join(f"{b.kind} {b.seconds:.3f} s" for b in budgets)
        self.log(f"measuring {result.id}" + (f" (budgets: {shown})" if shown else ""))
        settled = (lambda walls: decided(distributed.slowest_rounds(walls), budgets, settings.looks)) if budgets \
            else None
        measured = result.measured = self.runner.measure(stack, scenario, settings, benchmark=benchmark,
                                                         decided=settled)
        timed = measured.timed
        clock = timed.telemetry.sm_clock_median_mhz if timed.telemetry else None
        reference_clock = next((b.reference_clock_mhz for b in budgets if b.reference_clock_mhz), None)
        disturbance = []  # any rank's: the rounds judged are the slowest rank's
        ranks = measured.ranks
        for number, seen in enumerate(ranks):
            lines = describe_disturbance(list(seen.disturbed), list(seen.other_processes), seen.sm_clock_mhz,
                                         reference_clock, seen.host_stall, seen.host_steal)
            disturbance += [f"rank {number}: {line}" for line in lines] if len(ranks) > 1 else lines
        # A recording's drift is judged only on a steady clock: a busy CPU's own rounds drift by themselves.
        steady_clock = self.machine.cuda or self.config.scripted_clock is not None
        drift = describe_warmup_drift(measured.warmup_s, statistics.median(measured.samples_s), budgets,
                                      recording=self.config.update_baselines and steady_clock)
        disturbance += [drift] if drift else []
        result.latency = judge_latency(measured.samples_s, budgets, strict=self.config.strict, looks=settings.looks,
                                       disturbance=disturbance, missing=refs.problems.get(LATENCY),
                                       recording=self.config.update_baselines)
        result.target = judge_target(timed.wall.median, target_s)
        refused = (refuse_disturbed(disturbance) or refuse_unmatched_latents(
            stack, scenario, timed.latents, refs, self.record_command)) if self.config.update_baselines else None
        if refused:  # nothing recorded: the case is an error, its latency never `recorded` (disturbed stays so)
            result.error = refused
            result.latency = None if result.latency.verdict is Verdict.RECORDED else result.latency
        if main:
            compared = None  # the update's comparison with the bf16 baseline, handed to the judge
            if self.config.update_baselines and not refused:
                refs, compared = self._update_references(result, refs, clock, now)
            # Recorded latents of another shape: fidelity's problem (naming the file), never the case's.
            refs = check_latent_shapes(self.store, refs, timed.latents, self.record_command)
            result.fidelity = self._judge_fidelity(result, refs, floor, compared)
        result.fidelity = distributed.from_main(result.fidelity)
        if self.config.profile and self.config.profile in result.id:
            path = self.runner.profile(stack, scenario, self.config.report_dir / "profiles" / f"{result.id}.json")
            result.profile_trace = str(path)
            self.log(f"  profiler trace: {path}")

    def _judge_fidelity(self, result: CaseResult, refs: References, floor: tuple[float, str],
                        compared: Fidelity | None = None) -> FidelityResult:
        if self.config.update_baselines and result.stack.name == BASELINE and refs.baseline is not None:
            return FidelityResult(FidelityVerdict.UPDATED, baseline=str(refs.baseline.path),
                                  message="the bf16 baseline of this scenario, recorded on purpose")
        timed = result.measured.timed
        # As for a stale or broken calibration (store/references.py): calibrate's own stacks, so
        # the calibration holds every default stack's spread, not this case's alone.
        calibrate = self.record_command("", result.scenario.id, "calibrate --write")
        fidelity = judge_fidelity(timed.image, timed.latents, refs, floor=floor[0], floor_source=floor[1],
                                  lossless=result.stack.lossless, strict=self.config.strict, compared=compared,
                                  calibrate=calibrate)
        if fidelity.message:
            self.log(f"  fidelity: {fidelity.message}")
        if fidelity.verdict is FidelityVerdict.FAIL:
            evidence = write_side_by_side(
                refs.baseline.image, timed.image, fidelity.comparison,
                self.config.report_dir / "fidelity" / f"{result.id}.png",
                f"{result.stack.name} at {result.scenario.id} vs bf16 baseline: {'; '.join(fidelity.reasons)}"[:160])
            fidelity = replace(fidelity, evidence=str(evidence))
        return replace(fidelity, comparison=None)  # the SSIM map served the evidence: not kept, not sent to ranks

    def _update_references(self, result: CaseResult, old: References, clock: float | None,
                           now: Provenance) -> tuple[References, Fidelity | None]:
        """The sanctioned update: this stack's latency and fidelity, and for bf16 the scenario's
        baseline image; written once, then loaded back so the case is judged against it. With them
        the update's comparison with the bf16 baseline: another stack's update leaves that baseline
        as it was, so the judge's comparison would be the same one."""
        update, compared = reference_update(result.stack, result.scenario, result.measured, clock, old, now,
                                            self.machine)
        for line in write_update(self.store, old, update, force=self.config.force_update):
            self.baseline_updates.append(line)
            self.log(f"  reference: {line}")
        return self.references(result.stack, result.scenario, now, old.key), compared

    # -- records ------------------------------------------------------------------
    def _record(self, result: CaseResult) -> CaseRecord:
        return case_record(result.id, result.stack, result.scenario, self.machine, self.config, result.measured,
                           latency=result.latency, fidelity=result.fidelity, target=result.target,
                           error=result.error, profile_trace=result.profile_trace)

    def mark_interrupted(self, selected: int, error: BaseException | None = None, by: str | None = None) -> str:
        """The run ended early: say which signal (or `by` what) and how many of the `selected` cases
        finished (those this run set out to measure: what pytest's -k/-m left, or a command's runnable cases)."""
        cut = [r.id for r in self.records.values() if (r.error or "").startswith(CUT_SHORT)]
        done = len(self.records) + len(self.skipped) - len(cut)
        self.interrupted = (f"interrupted by {by or interrupts.describe(error)}: {done} of {selected} cases finished"
                            + (f", {', '.join(cut)} cut short" if cut else ""))
        return self.interrupted

    def not_judged(self) -> list[NotJudged]:
        """What this run could not judge without failing it: undecided latency, a fidelity gap
        (both fail instead under --flux-strict), a case the machine could not run."""
        return pending(not_judged(list(self.records.values()), list(self.skipped.values())))

    def results(self) -> RunResults:
        return RunResults(
            machine=self.machine.to_dict(), records=list(self.records.values()), started=self.started,
            command=self.command, environment=self.environment_report, baseline_updates=self.baseline_updates,
            skipped=list(self.skipped.values()), interrupted=self.interrupted, unrecorded=self.unrecorded,
            not_selected=self.not_selected,
        )
