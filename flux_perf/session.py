"""A measuring session: orchestration only. For each (stack, scenario) it asks the case runner
to measure, the judges for verdicts, the references module to record (on purpose only), and
keeps one typed record per case for the report. One failing stack never takes the session down.

    options -> SuiteConfig -> FluxSession.case -> CaseRunner (measure, telemetry)
            -> judges (latency, fidelity, target) -> CaseRecord -> report / references
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import distributed, references
from .baselines import BaselineError, BaselineKey, BaselineStore, components_changed, latency_stale_reasons, png_sha256
from .budgets import LatencyBudget, load_budgets
from .config import SuiteConfig
from .fidelity import compare_images, write_side_by_side
from .judges import FidelityResult, LatencyResult, describe_disturbance, judge_fidelity, judge_latency, judge_target
from .machine import Machine
from .models import resolve_model_source
from .provenance import now_iso
from .records import CaseRecord, RunResults
from .runner import CaseRunner, Measured, with_injection
from .scenarios import Scenario
from .stacks import BASELINE, Stack
from .stats import Verdict

# When several budgets judge one case, the verdict that decides (the first of these found).
_DECISIVE = (Verdict.FAIL, Verdict.DISTURBED, Verdict.INCONCLUSIVE, Verdict.PASS, Verdict.NO_BUDGET)


@dataclass
class CaseResult:
    stack: Stack
    scenario: Scenario
    measured: Measured | None = None
    error: str | None = None
    latency: LatencyResult | None = None
    fidelity: FidelityResult | None = None
    target: dict | None = None
    profile_trace: str | None = None

    @property
    def id(self) -> str:
        return f"{self.stack.name}-{self.scenario.id}"

    @property
    def timed(self):
        return self.measured.timed if self.measured else None


class FluxSession:
    def __init__(self, config: SuiteConfig, log: Callable[[str], None] = print, *,
                 environment: list[dict] | None = None, command: str | None = None):
        # Under torchrun each rank measures on its own GPU (cuda:LOCAL_RANK).
        config = replace(config, device=distributed.init_if_launched(config.device))
        self.config = config
        self.log = log
        source = resolve_model_source(config.model, config.device)
        self.machine = Machine.detect(config.device, source)
        self.budgets = load_budgets(config.budgets_path)
        self.budgets.check_gpu(self.machine.gpu_name)
        self.store = BaselineStore(config.baselines_dir)
        self.runner = CaseRunner(source, config.device, inject_slowdown=config.inject_slowdown, plant=config.plant,
                                 log=log)
        self.cases: dict[tuple[str, str], CaseResult] = {}
        self.records: dict[tuple[str, str], CaseRecord] = {}
        # (stack, scenario) -> why it cannot run on this machine; reported beside the results.
        self.skipped: dict[tuple[str, str], dict] = {}
        self.baseline_updates: list[str] = []
        self.started = now_iso()
        self.environment_report = environment  # what the guide's environment settings did
        self.command = command  # how this run was started, recorded in results.json
        self.interrupted: str | None = None

    # -- what can run ------------------------------------------------------------
    def skip_reason(self, stack: Stack) -> str | None:
        return self.machine.unavailable() or with_injection(stack, self.config.inject_slowdown, self.config.plant).unmet(self.machine.caps)

    def record_skip(self, stack: Stack, scenario: Scenario, reason: str) -> None:
        """Keep a case that could not run, with its reason, for the report."""
        self.skipped[(stack.name, scenario.id)] = {
            "stack": stack.name, "components": stack.describe(), "scenario": scenario.id, "reason": reason}

    def key(self, scenario: Scenario) -> BaselineKey:
        return BaselineKey(self.machine.slug, self.machine.fingerprint, scenario.id)

    def latency_budgets(self, stack: Stack, scenario: Scenario) -> list[LatencyBudget]:
        recorded, stale = None, ()
        if not self.config.update_baselines:
            recorded = self.store.recorded_latency(self.key(scenario), stack.name)
            if recorded:
                driver = self.machine.gpu.driver_version if self.machine.gpu else None
                stale = tuple(latency_stale_reasons(recorded, driver, stack.key))
        return self.budgets.latency_budgets(self.machine.gpu_name, scenario.id, stack.name, recorded, stale)

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
        except Exception as error:  # noqa: BLE001 - recorded, reported, and the session goes on
            result.error = f"{type(error).__name__}: {error}"
            self.log("".join(traceback.format_exception(error)[-6:]))
            self.runner.release()
        except BaseException as error:  # Ctrl-C, a timeout's signal: never a clean-looking record
            result.error = f"interrupted ({type(error).__name__}) before this case finished"
            self.interrupted = result.error
            self.records[cache_key] = self._record(result)
            raise
        if result.error:
            self.log(f"  FAILED: {result.error}")
        self.records[cache_key] = self._record(result)
        return result

    def _measure_and_judge(self, result: CaseResult, benchmark) -> None:
        stack, scenario = result.stack, result.scenario
        budgets = self.latency_budgets(stack, scenario)
        settings = self.config.measure
        shown = ", ".join(f"{b.kind} {b.seconds:.3f} s" for b in budgets)
        self.log(f"measuring {result.id}" + (f" (budgets: {shown})" if shown else ""))

        def verdict_of(samples: list[float]) -> Verdict:
            return self._judge(distributed.slowest_rounds(samples), budgets, ()).verdict

        measured = self.runner.measure(stack, scenario, settings, benchmark=benchmark,
                                       verdict_of=verdict_of if budgets else None)
        result.measured = measured
        timed = measured.timed
        samples = distributed.slowest_rounds([r.wall_ms / 1000.0 for r in timed.rounds])
        telemetry = timed.telemetry.summary() if timed.telemetry else {}
        clock = (telemetry.get("sm_clock_mhz") or {}).get("median")
        reference_clock = next((b.reference_clock_mhz for b in budgets if b.reference_clock_mhz), None)
        disturbance = describe_disturbance(timed.disturbed, telemetry.get("other_processes") or [], clock,
                                           reference_clock, timed.host_stall)
        result.latency = self._judge(samples, budgets, disturbance)
        result.target = judge_target(timed.wall.median, self.budgets.target(self.machine.gpu_name, scenario.id,
                                                                            stack.name))
        if distributed.is_main():  # every rank holds the same image; one judges and writes
            if self.config.update_baselines:
                self._update_references(result, samples, clock)
            if not (self.config.update_baselines and stack.name == BASELINE):
                result.fidelity = self._judge_fidelity(result)
        result.fidelity = distributed.from_main(result.fidelity)
        if self.config.profile and self.config.profile in result.id:
            path = self.runner.profile(stack, scenario, self.config.report_dir / "profiles" / f"{result.id}.json")
            result.profile_trace = str(path)
            self.log(f"  profiler trace: {path}")

    def _judge(self, samples: list[float], budgets: list[LatencyBudget], disturbance) -> LatencyResult:
        results = [judge_latency(samples, budget, strict=self.config.strict, looks=self.config.measure.looks,
                                 disturbance=disturbance) for budget in budgets]
        if not results:
            return judge_latency(samples, None, strict=self.config.strict)
        return min(results, key=lambda r: _DECISIVE.index(r.verdict))

    def _judge_fidelity(self, result: CaseResult) -> FidelityResult:
        key = self.key(result.scenario)
        try:
            baseline = self.store.load(key, result.scenario)
            recorded = self.store.recorded_fidelity(key, result.stack.name)
            own_latents = (baseline.latents if result.stack.name == BASELINE
                           else self.store.recorded_latents(key, result.stack.name, recorded))
            calibration = self.store.calibration(key)
        except BaselineError as error:
            return FidelityResult("error", message=str(error))
        # The stack's own rules, whatever a test planted into it (--flux-plant): a plant is judged as the stack.
        floor, source = self.budgets.ssim_floor(result.stack.name, result.stack.lossless)
        timed = result.measured.timed
        fidelity = judge_fidelity(
            baseline.image, timed.image, floor, source, lossless=result.stack.lossless,
            baseline_latents=baseline.latents, latents=timed.latents, image_sha256=png_sha256(timed.image),
            recorded=recorded, recorded_latents=own_latents, calibration=calibration, stack_name=result.stack.name,
            baseline_path=str(self.store.paths(key)[0]),
            stale=[*baseline.stale, *components_changed(recorded, result.stack.key)])
        if fidelity.message:
            self.log(f"  fidelity: {fidelity.message}")
        if fidelity.verdict == "fail":
            evidence = write_side_by_side(
                baseline.image, timed.image, compare_images(baseline.image, timed.image),
                self.config.report_dir / "fidelity" / f"{result.id}.png",
                f"{result.stack.name} at {result.scenario.id} vs bf16 baseline: {'; '.join(fidelity.reasons)}"[:160])
            fidelity = replace(fidelity, evidence=str(evidence))
        return fidelity

    def _update_references(self, result: CaseResult, samples: list[float], clock: float | None) -> None:
        """The sanctioned update: every measured stack's latency, and bf16's image."""
        key, timed, force = self.key(result.scenario), result.measured.timed, self.config.force_update
        message = references.record_latency(
            self.store, key, result.stack.name, result.stack.key, samples, sm_clock_mhz=clock,
            driver_version=self.machine.gpu.driver_version if self.machine.gpu else None, force=force)
        self.baseline_updates.append(message)
        self.log(f"  reference: {message}")
        if result.stack.name == BASELINE:
            path, message = references.record_image(
                self.store, key, result.scenario, timed.image, wall=timed.wall, deterministic=timed.deterministic,
                model_label=self.machine.source.label,
                gpu=self.machine.gpu.to_dict() if self.machine.gpu else {"name": self.machine.gpu_name}, force=force,
                latents=timed.latents)
            self.baseline_updates.append(message)
            self.log(f"  baseline written: {path} ({message})")
            result.fidelity = FidelityResult("updated", baseline=str(path), message=message)
        try:
            baseline = self.store.load(key, result.scenario)
        except BaselineError as error:
            self.log(f"  fidelity not recorded: {error}")
            return
        # Recorded before the case is judged, so the update judges against what it just wrote
        # (an update on purpose accepts the new output); in update runs only, the SSIM is computed twice.
        measured = compare_images(baseline.image, timed.image, baseline.latents, timed.latents)
        message = references.record_fidelity(
            self.store, key, result.stack.name, result.stack.key, ssim=measured.ssim, psnr=measured.to_dict()["psnr"],
            latent_rel_l2=measured.latent_rel_l2, image=timed.image, lossless=result.measured.lossless, force=force,
            latents=timed.latents)
        self.baseline_updates.append(message)
        self.log(f"  reference: {message}")

    # -- records ------------------------------------------------------------------
    def _record(self, result: CaseResult) -> CaseRecord:
        machine = self.machine
        record = CaseRecord(
            id=result.id, stack=result.stack.name, stack_key=result.stack.key, components=result.stack.describe(),
            lossless=result.stack.lossless, scenario=result.scenario.to_dict(), model=machine.source.label,
            fingerprint=machine.fingerprint, gpu=machine.gpu_name, device=self.config.device,
            injected_slowdown=self.config.inject_slowdown, planted=self.config.plant, world_size=distributed.world_size(), error=result.error,
            latency=result.latency.to_dict() if result.latency else None,
            fidelity=result.fidelity.to_dict() if result.fidelity else None, target=result.target,
            profile_trace=result.profile_trace,
        )
        measured = result.measured
        if measured is None:
            return record
        timed = measured.timed
        wall = timed.wall
        denoise_s = timed.stage_summary("denoise").median
        record.effective_scenario = measured.effective.to_dict()
        record.build_s, record.apply_s = measured.build_s, measured.apply_s
        record.encode_prompt_s = measured.encode_prompt_s
        record.lossless = measured.lossless
        record.first_call_s, record.compile_s = timed.first_call_s, timed.compile_s
        record.warmup_wall_s, record.rounds, record.attempts = timed.warmup_wall_s, wall.n, timed.attempts
        record.wall_s = wall.to_dict()
        record.wall_samples_s = [r.wall_ms / 1000.0 for r in timed.rounds]
        record.stages_ms = {
            "encode": timed.stage_summary("encode").median * 1000, "denoise": denoise_s * 1000,
            "decode": timed.stage_summary("decode").median * 1000,
            "total_device": timed.stage_summary("total").median * 1000, "step_median": timed.median_step_ms,
        }
        record.rounds_detail = [r.to_dict() for r in timed.rounds]
        record.deterministic, record.peak_memory_gib = timed.deterministic, timed.peak_memory_gib
        record.component_reports, record.notes = measured.components, timed.notes
        record.host_cpu_stall = timed.host_stall
        if timed.telemetry is not None:
            record.telemetry = timed.telemetry.summary()
            record.telemetry_samples = [s.__dict__ for s in timed.telemetry.samples]
            record.energy_per_image_j = timed.telemetry.energy_per_image_j(wall.n)
            record.flags = timed.telemetry.flags()
        if "cpu-contention" in timed.disturbed:
            record.flags = [*(record.flags or []), "cpu-contention"]
        record.flops_per_step = measured.flops_per_step
        achieved = measured.effective.steps * measured.flops_per_step["total"] / denoise_s / 1e12
        record.transformer_tflops = achieved
        peaks = machine.peaks
        if peaks is not None:
            record.pct_bf16_peak = 100 * achieved / peaks.bf16_tflops if peaks.bf16_tflops else None
            record.pct_fp8_peak = 100 * achieved / peaks.fp8_tflops if peaks.fp8_tflops else None
        return record

    def results(self) -> RunResults:
        return RunResults(
            machine=self.machine.to_dict(), records=list(self.records.values()), started=self.started,
            command=self.command, environment=self.environment_report, baseline_updates=self.baseline_updates,
            skipped=list(self.skipped.values()), interrupted=self.interrupted,
        )
