"""The timing instrument: warm up until steady, then timed rounds of whole generations.

Compile, autotuning and first-call costs stay out of the timed rounds and are
reported apart (`first_call_s`, `compile_s`). A recompile during the timed rounds
is an error: it would time the compiler, not the model.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import distributed
from .generate import Generation, StageTimes
from .host import CONTENTION, HostPressure
from .stats import Summary, Verdict, summarize
from .telemetry import TelemetryReport, TelemetrySampler

# Flags that make the timed rounds unrepresentative of the card: measured again, then marked.
# A power cap is not among them: a loaded H100 sits at its power limit as a matter of course,
# so measuring again would not change it; it is reported as a flag instead.
DISTURBED = ("thermal-throttle", "hw-slowdown", "other-processes")
# Bump when the way rounds are timed changes: recorded references made before are then stale.
# 2: reference preprocessing out of the timed call, garbage collection off during timed rounds.
MEASUREMENT_VERSION = 2


@dataclass(frozen=True)
class MeasureSettings:
    """How much to measure. Defaults come from the run-to-run spread measured on the H100
    (docs/measurement.md)."""

    # 8 rounds, then at most one more look at 16: with two looks each gets half the error
    # budget (stats.look_confidence), and 8 is the fewest rounds whose median interval reaches it.
    rounds: int = 8
    max_rounds: int = 16
    max_warmup: int = 6
    steady_tolerance: float = 0.03  # consecutive warm-up rounds within 3 %: steady
    telemetry_interval_s: float = 0.05
    remeasure_when_disturbed: int = 1

    def __post_init__(self):
        if self.rounds < 1 or self.max_rounds < self.rounds:
            raise ValueError(f"rounds={self.rounds}, max_rounds={self.max_rounds}: need 1 <= rounds <= max_rounds")

    @property
    def looks(self) -> int:
        """How many times a verdict may be taken: after `rounds`, then after each batch of more."""
        return 1 + -(-(self.max_rounds - self.rounds) // self.rounds)


class RecompiledDuringTiming(RuntimeError):
    pass


@dataclass
class Timed:
    """What the instrument measured for one (stack, scenario)."""

    first_call_s: float
    warmup_wall_s: list[float]
    rounds: list[StageTimes]
    image: np.ndarray  # the last timed round's output: what was timed is what is judged
    latents: np.ndarray | None  # that round's final latents
    deterministic: bool  # every timed round gave the identical image
    peak_memory_gib: float | None
    telemetry: TelemetryReport | None
    attempts: int = 1
    notes: list[str] = field(default_factory=list)
    host_stall: float | None = None  # share of the timed rounds in which tasks waited for a CPU (PSI)

    @property
    def compile_s(self) -> float:
        """First call minus a steady call: compilation, autotuning, graph capture, lazy init."""
        steady = self.warmup_wall_s[-1] if self.warmup_wall_s else self.wall.median
        return max(0.0, self.first_call_s - steady)

    @property
    def wall(self) -> Summary:
        return summarize([r.wall_ms / 1000.0 for r in self.rounds])

    def stage_summary(self, stage: str) -> Summary:
        return summarize([getattr(r, f"{stage}_ms") / 1000.0 for r in self.rounds])

    @property
    def median_step_ms(self) -> float:
        return statistics.median(ms for r in self.rounds for ms in r.step_ms)

    @property
    def disturbed(self) -> list[str]:
        flags = [f for f in (self.telemetry.flags() if self.telemetry else []) if f in DISTURBED]
        if self.host_stall is not None and self.host_stall > CONTENTION:
            flags.append("cpu-contention")
        return flags


@contextlib.contextmanager
def no_recompile():
    """Turn a dynamo recompile into an error while timing."""
    import torch._dynamo

    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            yield
    except torch._dynamo.exc.RecompileError as error:
        raise RecompiledDuringTiming(
            f"torch.compile recompiled during the timed rounds (shapes or guards changed): {error}"
        ) from error


@contextlib.contextmanager
def quiet_host():
    """No garbage collection during timed rounds: a collection pass stalls the thread that
    issues the kernels, which host-bound cases (512 without CUDA graphs) feel directly."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def warm_up(run: Callable[[], Generation], settings: MeasureSettings,
            log: Callable[[str], None] = lambda _: None) -> tuple[float, list[float]]:
    """The first call alone (compilation, capture, lazy init), then calls until two in a row
    agree within `steady_tolerance`. Returns the first call's seconds and the later calls'."""
    log("first call (compiles and captures where the stack does)")
    first_call_s = run().times.wall_ms / 1000.0
    log(f"first call {first_call_s:.2f} s (includes compilation)")
    warmup: list[float] = []
    for _ in range(settings.max_warmup):
        warmup.append(run().times.wall_ms / 1000.0)
        if len(warmup) >= 2 and abs(warmup[-1] - warmup[-2]) <= settings.steady_tolerance * warmup[-2]:
            break
    log(f"warm-up {len(warmup) + 1} calls, last {warmup[-1] if warmup else first_call_s:.3f} s")
    return first_call_s, warmup


def measure(run: Callable[[], Generation], settings: MeasureSettings, *, cuda: bool,
            verdict_of: Callable[[list[float]], Verdict] | None = None, benchmark=None,
            log: Callable[[str], None] = lambda _: None) -> Timed:
    """Warm up `run`, then time rounds; an inconclusive gate adds rounds up to the cap.

    `benchmark` is a pytest-benchmark fixture: the timed rounds go through its
    `pedantic` so its JSON, --benchmark-save and --benchmark-compare see them.
    """
    first_call_s, warmup = warm_up(run, settings, log)
    attempt = 0
    while True:
        attempt += 1
        timed = _timed_rounds(run, settings, cuda, verdict_of, benchmark if attempt == 1 else None)
        timed.first_call_s, timed.warmup_wall_s, timed.attempts = first_call_s, warmup, attempt
        # Ranks of a torchrun job must take the same branch (their next rounds are collective).
        if not distributed.from_main(bool(timed.disturbed)) or attempt > settings.remeasure_when_disturbed:
            if timed.disturbed:
                timed.notes.append(f"rounds disturbed ({', '.join(timed.disturbed)}) after {attempt} attempts")
            return timed
        log(f"rounds disturbed ({', '.join(timed.disturbed)}): measuring again")


def _timed_rounds(run, settings: MeasureSettings, cuda: bool, verdict_of, benchmark) -> Timed:
    generations: list[Generation] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sampler = TelemetrySampler(torch.cuda.current_device(), settings.telemetry_interval_s) if cuda else None
    if sampler:
        sampler.start()
    pressure = HostPressure()
    try:
        with no_recompile(), quiet_host():
            if benchmark is not None and not getattr(benchmark, "disabled", False):
                benchmark.pedantic(lambda: generations.append(run()), rounds=settings.rounds, iterations=1)
            else:
                generations.extend(run() for _ in range(settings.rounds))
            while verdict_of is not None and len(generations) < settings.max_rounds:
                walls = [g.times.wall_ms / 1000.0 for g in generations]
                if verdict_of(walls) is not Verdict.INCONCLUSIVE:
                    break
                for _ in range(min(settings.rounds, settings.max_rounds - len(generations))):
                    generation = run()
                    generations.append(generation)
                    if benchmark is not None and benchmark.stats is not None:
                        benchmark.stats.update(generation.times.wall_ms / 1000.0)
    finally:
        telemetry = sampler.stop() if sampler else None
    reference = generations[0].image
    return Timed(
        first_call_s=0.0,
        warmup_wall_s=[],
        rounds=[g.times for g in generations],
        image=generations[-1].image,
        latents=generations[-1].latents,
        deterministic=all(np.array_equal(reference, g.image) for g in generations[1:]),
        peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        telemetry=telemetry,
        host_stall=pressure.stall_fraction(),
    )
