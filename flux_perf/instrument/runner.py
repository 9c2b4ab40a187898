"""The case runner: build a stack's pipeline, warm it up, time rounds. No pytest here; the
plugin, the command line and the A/B worker all measure through it.

One pipeline is loaded at a time (a full-size model is 23 GB); asking for another stack
releases the current one with everything compiled for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import distributed
from .flops import scenario_tokens, step_flops_breakdown
from ..model.clocks import ScriptedClock
from ..model.generate import Generation, generate_with, reference_pixels
from ..model.inputs import PromptCache
from .measure import MeasureSettings, Timed, measure
from ..model.models import ModelSource
from ..model.pipeline import FluxModel, free_memory, load_model
from ..model.scenarios import Scenario
from ..components.stacks import Stack, compose, parse_stack


def with_injection(stack: Stack, fraction: float | None, plant: str | None = None) -> Stack:
    """`stack` plus the test-only planted slow-down and planted components (a break, another
    kernel), under the same name: the gate judges them against the stack's own references."""
    extra = [*(parse_stack(f"slowdown:{fraction}").components if fraction else ()),
             *(parse_stack(plant).components if plant else ())]
    if not extra:
        return stack
    # A planted attention backend (or scheduler, ...) replaces the stack's own of that kind.
    replaced = {c.exclusive for c in extra if c.exclusive}
    kept = [c for c in stack.components if not (c.exclusive and c.exclusive in replaced)]
    return compose(stack.name, [*kept, *extra])


@dataclass
class Prepared:
    """A built pipeline with a stack applied: what every round of every scenario runs on."""

    key: str
    model: FluxModel
    stack: Stack  # live component instances (they keep per-pipeline state)
    apply_s: float


@dataclass
class Case:
    """One (stack, scenario) ready to run rounds: `round()` is one timed generation."""

    prepared: Prepared
    scenario: Scenario  # as asked
    effective: Scenario  # after components adjusted it (fewer steps, another guidance)
    round: Callable[[], Generation]


@dataclass(frozen=True)
class RankConditions:
    """What one rank's telemetry and host saw during its timed rounds: the judge's disturbances."""

    disturbed: tuple
    other_processes: tuple
    sm_clock_mhz: float | None
    host_stall: float | None
    host_steal: float | None

    @classmethod
    def of(cls, timed: Timed) -> RankConditions:
        telemetry = timed.telemetry
        return cls(tuple(timed.disturbed), tuple(telemetry.other_processes if telemetry else ()),
                   telemetry.sm_clock_median_mhz if telemetry else None, timed.host_stall, timed.host_steal)


@dataclass
class Measured:
    """What the runner measured for one (stack, scenario)."""

    stack: Stack
    scenario: Scenario
    effective: Scenario
    timed: Timed
    build_s: float
    apply_s: float
    lossless: bool
    flops_per_step: dict
    components: dict = field(default_factory=dict)
    encode_prompt_s: float = 0.0  # the text encoders on the prompt (0 for synthetic embeddings)
    samples_s: tuple[float, ...] = ()  # the rounds' wall seconds; under torchrun the slowest rank's
    # The warm-up calls' wall seconds, as samples_s: under torchrun the slowest rank's, so that the
    # warm-up weighed against the rounds is the same rank's, and every rank weighs the same numbers.
    warmup_s: tuple[float, ...] = ()
    # Every rank's conditions, in rank order (this process's alone without torchrun): the rounds
    # judged are the slowest rank's, so what disturbed any rank disturbed them.
    ranks: tuple[RankConditions, ...] = ()

    def __post_init__(self):
        if not self.ranks:  # never judged on no conditions at all
            self.ranks = (RankConditions.of(self.timed),)


class CaseRunner:
    def __init__(self, source: ModelSource, device: str, *, inject_slowdown: float | None = None,
                 plant: str | None = None, log: Callable[[str], None] = lambda _: None,
                 scripted_seconds: float | None = None):
        self.source = source
        self.device = device
        self.cuda = torch.device(device).type == "cuda"
        self.inject_slowdown = inject_slowdown
        self.plant = plant
        self.log = log
        self.loaded: Prepared | None = None
        self.prompts = PromptCache()  # a stack built again reuses the prompt's embeddings
        # Test-only: rounds take scripted wall time (model/clocks.ScriptedClock), so the CPU suite
        # can drive the latency gate without depending on the machine's speed.
        self.clock = ScriptedClock(scripted_seconds) if scripted_seconds else None

    def prepare(self, stack: Stack) -> Prepared:
        """Build the pipeline and apply `stack` (reusing the loaded one when it is the same)."""
        stack = with_injection(stack, self.inject_slowdown, self.plant)
        if self.loaded and self.loaded.key == stack.key:
            return self.loaded
        self.release()
        self.log(f"building {self.source.label} model for stack {stack.name} [{stack.describe()}]")
        model = load_model(self.source, self.device, prompt_tokens=stack.prompt_tokens(), prompts=self.prompts)
        live = stack.fresh()
        start = time.perf_counter()

        def calibrate(scenario: Scenario, contexts: list) -> None:
            began = time.perf_counter()
            self.log(f"  calibrating on one generation at {scenario.id} ...")
            generate_with(model, scenario, contexts)
            self.log(f"  calibrated in {time.perf_counter() - began:.2f} s")

        try:
            live.apply(model.pipe, calibrate)
        except BaseException:
            live.release(model.pipe)  # a stack that fails halfway still gives back what it borrowed
            raise
        if self.cuda:
            torch.cuda.synchronize()
        apply_s = time.perf_counter() - start
        reused = " (earlier in this session; reused)" if model.prompt_reused else ""
        encoded = (f", prompt encoded in {model.encode_prompt_s:.2f} s{reused}, text encoders released"
                   if model.text_encoders_released else "")
        self.log(f"  built in {model.build_s:.2f} s{encoded}, components applied in {apply_s:.2f} s")
        self.loaded = Prepared(stack.key, model, live, apply_s)
        return self.loaded

    def case(self, stack: Stack, scenario: Scenario) -> Case:
        prepared = self.prepare(stack)
        live, model = prepared.stack, prepared.model
        effective = live.adjust(scenario)
        contexts = live.call_contexts(model.pipe)
        live.reset_reports()
        pixels = reference_pixels(model.pipe, effective, model.device)
        return Case(prepared, scenario, effective,
                    lambda: generate_with(model, effective, contexts, pixels, clock=self.clock))

    def measure(self, stack: Stack, scenario: Scenario, settings: MeasureSettings, *,
                decided: Callable[[list[float]], bool] | None = None, benchmark=None) -> Measured:
        """Warm up and time (stack, scenario); while `decided` says no, more rounds (see measure)."""
        case = self.case(stack, scenario)
        timed = measure(case.round, settings, cuda=self.cuda, benchmark=benchmark, decided=decided,
                        log=lambda m: self.log("  " + m), host_pressure=self.clock is None)
        model = case.prepared.model
        text_tokens = model.prompt.prompt_embeds.shape[1]
        tokens = scenario_tokens(case.effective.height, case.effective.width, model.vae_scale_factor)
        latent = scenario_tokens(case.effective.height, case.effective.width, model.vae_scale_factor, False)
        flops = step_flops_breakdown(model.transformer_config, tokens, text_tokens)
        return Measured(
            stack=stack, scenario=scenario, effective=case.effective, timed=timed, build_s=model.build_s,
            encode_prompt_s=model.encode_prompt_s,
            apply_s=case.prepared.apply_s, lossless=case.prepared.stack.lossless,
            flops_per_step={"linear": flops.linear, "attention": flops.attention, "total": flops.total,
                            "image_tokens": tokens, "text_tokens": text_tokens,
                            "latent_tokens": latent, "reference_tokens": tokens - latent},
            components=case.prepared.stack.report(),
            samples_s=tuple(distributed.slowest_rounds([r.wall_ms / 1000.0 for r in timed.rounds])),
            warmup_s=tuple(distributed.slowest_rounds(list(timed.warmup_wall_s))),
            ranks=tuple(distributed.gathered(RankConditions.of(timed))),
        )

    def profile(self, stack: Stack, scenario: Scenario, path: Path) -> Path:
        """One more generation under torch.profiler; the trace opens in Perfetto/chrome://tracing.
        Stage ranges are also NVTX ranges, for `nsys profile` of the same case."""
        from torch.profiler import ProfilerActivity, profile

        case = self.case(stack, scenario)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        path.parent.mkdir(parents=True, exist_ok=True)
        with profile(activities=activities, record_shapes=False) as prof:
            case.round()
        prof.export_chrome_trace(str(path))
        return path

    def release(self) -> None:
        """Drop the current pipeline and everything compiled for it."""
        if self.loaded is not None:
            self.loaded.stack.release(self.loaded.model.pipe)  # give back what the components borrowed
            self.loaded = None
            # A fresh stack must not inherit another stack's compiled graphs (or its recompile budget).
            torch._dynamo.reset()
        free_memory(self.device)  # always: a model dropped earlier may still hold its 23 GB
