"""A measuring session: builds each stack's pipeline (one at a time), measures every
(stack, scenario) case once, and judges latency and fidelity. Used by the pytest plugin
and the command line alike. One failing stack never takes the session down."""

from __future__ import annotations

import gc
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import distributed
from .baselines import BaselineError, BaselineKey, BaselineStore
from .budgets import LatencyBudget, load_budgets
from .components import Capabilities
from .config import SuiteConfig
from .fidelity import compare_images, write_side_by_side
from .flops import MatmulPeaks, measure_matmul_peaks, scenario_tokens, step_flops_breakdown
from .generate import generate
from .measure import Timed, measure
from .models import resolve_model_source
from .pipeline import FluxModel, load_model
from .provenance import git_commit, now_iso, software_versions
from .scenarios import Scenario
from .stacks import BASELINE, Stack, parse_stack
from .stats import Verdict, latency_verdict, summarize
from .telemetry import gpu_identity, nvml_unavailable_reason


@dataclass
class LatencyResult:
    budget: LatencyBudget | None
    verdict: Verdict
    strict: bool

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAIL or (self.strict and self.verdict is Verdict.INCONCLUSIVE)

    def to_dict(self) -> dict:
        return {"budget": self.budget.to_dict() if self.budget else None, "verdict": self.verdict.value,
                "strict": self.strict, "failed": self.failed}


@dataclass
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


@dataclass
class CaseResult:
    stack: Stack
    scenario: Scenario
    effective: Scenario | None = None
    timed: Timed | None = None
    error: str | None = None
    build_s: float | None = None
    apply_s: float | None = None
    flops_per_step: dict | None = None
    latency: LatencyResult | None = None
    fidelity: FidelityResult | None = None
    components: dict = field(default_factory=dict)
    profile_trace: str | None = None

    @property
    def id(self) -> str:
        return f"{self.stack.name}-{self.scenario.id}"


class FluxSession:
    def __init__(self, config: SuiteConfig, log: Callable[[str], None] = print):
        # Under torchrun each rank measures on its own GPU (cuda:LOCAL_RANK).
        config = replace(config, device=distributed.init_if_launched(config.device))
        self.config = config
        self.log = log
        self.cuda = torch.device(config.device).type == "cuda"
        self.source = resolve_model_source(config.model, config.device)
        self.budgets = load_budgets(config.budgets_path)
        self.store = BaselineStore(config.baselines_dir)
        self.gpu = gpu_identity(torch.device(config.device).index or 0) if self.cuda else None
        self.caps = Capabilities.detect(config.device)
        self.cases: dict[tuple[str, str], CaseResult] = {}
        # (stack, scenario) -> why it cannot run on this machine; reported beside the results.
        self.skipped: dict[tuple[str, str], dict] = {}
        self.baseline_updates: list[str] = []
        self._loaded: tuple[str, FluxModel, Stack, float] | None = None
        self._peaks: MatmulPeaks | None = None
        self.started = now_iso()
        # Filled in by whoever drives the session (the pytest plugin): for the report.
        self.environment_report: list[dict] | None = None
        self.report_paths: dict | None = None
        self.command: str | None = None  # how this run was started, recorded in results.json
        self.reported_cases = (0, 0)  # (measured, skipped) already written

    # -- identity -------------------------------------------------------------
    @property
    def gpu_name(self) -> str | None:
        if self.gpu:
            return self.gpu.name
        return torch.cuda.get_device_name() if self.cuda and torch.cuda.is_available() else None

    @property
    def machine_slug(self) -> str:
        if self.gpu:
            return self.gpu.slug
        if self.gpu_name:
            return "".join(c if c.isalnum() else "-" for c in self.gpu_name.lower()).strip("-")
        return f"cpu-{platform.machine().lower()}"

    def machine_info(self) -> dict:
        return {
            "gpu": self.gpu.to_dict() if self.gpu else None,
            "gpu_name": self.gpu_name,
            "nvml": nvml_unavailable_reason() or "available",
            "device": self.config.device,
            "software": software_versions(),
            "commit": git_commit(),
            "model": {"source": self.source.label, "kind": self.source.kind,
                      "fingerprint": self.source.fingerprint()},
            # Ceilings only where something ran: a run that skipped everything may have no GPU.
            "matmul_peaks": self.peaks().to_dict() if self.cuda and self.cases else None,
        }

    def peaks(self) -> MatmulPeaks:
        if self._peaks is None:
            self._peaks = measure_matmul_peaks(self.config.device) if self.cuda else MatmulPeaks(None, None, 0)
            if self.cuda:
                self.log(f"matmul ceilings: bf16 {self._peaks.bf16_tflops} TFLOP/s, fp8 {self._peaks.fp8_tflops} TFLOP/s")
        return self._peaks

    def skip_reason(self, stack: Stack) -> str | None:
        if self.cuda and not torch.cuda.is_available():
            return f"no CUDA GPU visible (torch {torch.__version__}, CUDA build {torch.version.cuda})"
        return self._with_injection(stack).unmet(self.caps)

    def record_skip(self, stack: Stack, scenario: Scenario, reason: str) -> None:
        """Keep a case that could not run, with its reason, for the report."""
        self.skipped[(stack.name, scenario.id)] = {
            "stack": stack.name, "components": stack.describe(), "scenario": scenario.id, "reason": reason}

    # -- models ---------------------------------------------------------------
    def _with_injection(self, stack: Stack) -> Stack:
        if not self.config.inject_slowdown:
            return stack
        planted = parse_stack(f"{stack.key}+slowdown:{self.config.inject_slowdown}")
        return Stack(stack.name, planted.components)

    def _model_for(self, stack: Stack) -> tuple[FluxModel, Stack, float]:
        stack = self._with_injection(stack)
        if self._loaded and self._loaded[0] == stack.key:
            return self._loaded[1], self._loaded[2], self._loaded[3]
        self.release()
        self.log(f"building {self.source.label} model for stack {stack.name} [{stack.describe()}]")
        model = load_model(self.source, self.config.device)
        live = stack.fresh()
        start = time.perf_counter()
        live.apply(model.pipe)
        if self.cuda:
            torch.cuda.synchronize()
        apply_s = time.perf_counter() - start
        self.log(f"  built in {model.build_s:.2f} s, components applied in {apply_s:.2f} s")
        self._loaded = (stack.key, model, live, apply_s)
        return model, live, apply_s

    def release(self) -> None:
        """Drop the current pipeline and everything compiled for it."""
        if self._loaded is not None:
            self._loaded = None
            # A fresh stack must not inherit another stack's compiled graphs (or its recompile budget).
            torch._dynamo.reset()
        # Always collect: diffusers pipelines hold reference cycles, so a model dropped elsewhere
        # (a test's local) keeps its 23 GB until a collection and would count in the next peak.
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    # -- measuring --------------------------------------------------------------
    def key(self, scenario: Scenario) -> BaselineKey:
        return BaselineKey(self.machine_slug, self.source.fingerprint(), scenario.id)

    def latency_budget(self, stack: Stack, scenario: Scenario) -> LatencyBudget | None:
        recorded = None if self.config.update_baselines else self.store.recorded_latency(self.key(scenario), stack.name)
        return self.budgets.latency_budget(self.gpu_name, scenario.id, stack.name, recorded)

    def case(self, stack: Stack, scenario: Scenario, benchmark=None) -> CaseResult:
        """Measure (stack, scenario) once per session; later calls return the same result."""
        cache_key = (stack.name, scenario.id)
        if cache_key in self.cases:
            return self.cases[cache_key]
        result = CaseResult(stack=stack, scenario=scenario)
        self.cases[cache_key] = result
        if self.cuda:
            self.peaks()  # once per session, before the first model takes the memory
        try:
            model, live, apply_s = self._model_for(stack)
            result.build_s, result.apply_s = model.build_s, apply_s
            result.effective = live.adjust(scenario)
            contexts = live.call_contexts(model.pipe)
            live.reset_reports()

            def run():
                return generate(model.pipe, result.effective, model.prompt.prompt_embeds,
                                model.prompt.pooled_prompt_embeds, device=model.device, call_contexts=contexts)

            budget = self.latency_budget(stack, scenario)
            self.log(f"measuring {result.id}" + (f" (budget {budget.seconds:.3f} s, {budget.kind})" if budget else ""))
            result.timed = measure(
                run, self.config.measure, cuda=self.cuda, benchmark=benchmark, log=lambda m: self.log("  " + m),
                verdict_of=(lambda samples: latency_verdict(distributed.slowest_rounds(samples), budget))
                if budget else None,
            )
            result.components = live.report()
            tokens = scenario_tokens(result.effective.height, result.effective.width, model.vae_scale_factor)
            flops = step_flops_breakdown(model.transformer_config, tokens, model.prompt.prompt_embeds.shape[1])
            result.flops_per_step = {"linear": flops.linear, "attention": flops.attention, "total": flops.total,
                                     "image_tokens": tokens, "text_tokens": model.prompt.prompt_embeds.shape[1]}
            self._judge_latency(result, budget)
            if distributed.is_main():  # every rank holds the same image; one judges and writes
                self._judge_fidelity(result)
            result.fidelity = distributed.from_main(result.fidelity)
            if self.config.profile and self.config.profile in result.id:
                result.profile_trace = self._profile(run, result)
        except torch.cuda.OutOfMemoryError as error:
            result.error = (
                f"out of memory running stack {stack.name} at {scenario.id}: {str(error).splitlines()[0]}. "
                f"Memory fallbacks: --flux-stacks '{stack.name}+vae-tiling' or '{stack.name}+model-cpu-offload'"
            )
            self.release()
        except Exception as error:  # noqa: BLE001 - recorded, reported, and the session goes on
            result.error = f"{type(error).__name__}: {error}"
            self.log("".join(traceback.format_exception(error)[-6:]))
            self.release()
        if result.error:
            self.log(f"  FAILED: {result.error}")
        return result

    def _judge_latency(self, result: CaseResult, budget: LatencyBudget | None) -> None:
        samples = distributed.slowest_rounds([r.wall_ms / 1000.0 for r in result.timed.rounds])
        result.latency = LatencyResult(budget, latency_verdict(samples, budget), self.config.strict)
        if self.config.update_baselines and distributed.is_main():
            wall = summarize(samples)  # what was judged: the slowest rank's rounds under torchrun
            telemetry = result.timed.telemetry.summary() if result.timed.telemetry else {}
            self.store.record_latency(self.key(result.scenario), result.stack.name, {
                "median_s": wall.median, "ci_low_s": wall.ci_low, "ci_high_s": wall.ci_high, "rounds": wall.n,
                "samples_s": samples, "sm_clock_mhz": (telemetry.get("sm_clock_mhz") or {}).get("median"),
                "stack": result.stack.key, "recorded_at": now_iso(), "commit": git_commit(),
            }, force=self.config.force_update)

    def _judge_fidelity(self, result: CaseResult) -> None:
        key = self.key(result.scenario)
        image = result.timed.image
        if self.config.update_baselines and result.stack.name == BASELINE:
            result.fidelity = self._update_baseline(result, key)
            return
        try:
            baseline = self.store.load(key, result.scenario)
        except BaselineError as error:
            result.fidelity = FidelityResult("error", message=str(error))
            return
        fidelity = compare_images(baseline.image, image)
        lossless = self._loaded[2].lossless if self._loaded else result.stack.lossless
        floor, source = self.budgets.ssim_floor(result.stack.name, lossless)
        verdict = "pass" if fidelity.ssim >= floor else "fail"
        evidence = None
        if verdict == "fail":
            evidence = str(write_side_by_side(
                baseline.image, image, fidelity, self.config.report_dir / "fidelity" / f"{result.id}.png",
                f"{result.stack.name} at {result.scenario.id} vs bf16 baseline (floor {floor})",
            ))
        result.fidelity = FidelityResult(
            verdict, fidelity.ssim, fidelity.to_dict()["psnr"], floor, source,
            str(self.store.paths(key)[0]), evidence, stale=baseline.stale,
        )

    def _update_baseline(self, result: CaseResult, key: BaselineKey) -> FidelityResult:
        image = result.timed.image
        message = f"{key}: new baseline"
        old_ssim = None
        try:
            old = self.store.load(key, result.scenario)
            old_ssim = compare_images(old.image, image).ssim
            old_median = old.provenance.get("latency", {}).get("median")
            message = f"{key}: SSIM old vs new {old_ssim:.4f}"
            if old_median:
                change = result.timed.wall.median / old_median - 1
                message += f", bf16 latency {old_median:.3f} s -> {result.timed.wall.median:.3f} s ({change:+.1%})"
        except BaselineError as error:
            message += f" (previous one unusable: {error})" if not str(error).startswith("no baseline") else ""
        path = self.store.save(key, image, {
            "scenario": result.scenario.to_dict(),
            "stack": BASELINE,
            "model": self.source.label,
            "gpu": self.gpu.to_dict() if self.gpu else {"name": self.gpu_name},
            "software": software_versions(),
            "commit": git_commit(),
            "created_at": now_iso(),
            "latency": result.timed.wall.to_dict(),
            "deterministic_across_rounds": result.timed.deterministic,
        }, force=self.config.force_update)
        self.baseline_updates.append(message)
        self.log(f"  baseline written: {path} ({message})")
        return FidelityResult("updated", ssim=old_ssim, baseline=str(path), message=message)

    def _profile(self, run, result: CaseResult) -> str:
        """One more generation under torch.profiler; the trace opens in Perfetto/chrome://tracing.
        Stage ranges are also NVTX ranges, for `nsys profile` of the same test."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        path = Path(self.config.report_dir) / "profiles" / f"{result.id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with profile(activities=activities, record_shapes=False) as prof:
            run()
        prof.export_chrome_trace(str(path))
        self.log(f"  profiler trace: {path}")
        return str(path)
