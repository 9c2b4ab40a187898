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

from .. import TELEMETRY_INTERVAL_S
from . import distributed
from ..model.generate import Generation, StageTimes
from ..store.files import positive_number
from .host import HostPressure, ThreadClock, host_flags
from .rounds import Summary, summarize
from .telemetry import DISTURBING, Flag, TelemetryReport, TelemetrySampler

# Bump when the way rounds are timed changes: recorded references made before are then stale.
# 2: reference preprocessing out of the timed call, garbage collection off during timed rounds.
MEASUREMENT_VERSION = 2


@dataclass(frozen=True)
class MeasureSettings:
    """How much to measure. Defaults come from the run-to-run spread measured on the H100
    (docs/measurement.md)."""

    # 8 rounds, then, while the verdict is undecided, twice as many (16, 32): each look gets an
    # equal share of the error (gate/stats.look_confidence), and 8 is enough for the first look's
    # interval. `max_case_seconds` of timed rounds cap a slow case's looks.
    rounds: int = 8
    max_rounds: int = 32
    max_case_seconds: float = 90.0
    max_warmup: int = 6
    steady_tolerance: float = 0.03  # consecutive warm-up rounds within 3 %: steady
    telemetry_interval_s: float = TELEMETRY_INTERVAL_S  # NVML sampling: its thread shares the process
    remeasure_when_disturbed: int = 1

    def __post_init__(self):
        if self.rounds < 1 or self.max_rounds < self.rounds:
            raise ValueError(f"rounds={self.rounds}, max_rounds={self.max_rounds}: need 1 <= rounds <= max_rounds")
        if not self.max_case_seconds > 0:
            raise ValueError(f"max_case_seconds={self.max_case_seconds}: must be a positive number of seconds")
        if not positive_number(self.telemetry_interval_s):
            raise ValueError(f"telemetry_interval_s={self.telemetry_interval_s!r}: "
                             "must be a positive number of seconds")

    @property
    def look_sizes(self) -> tuple[int, ...]:
        """The round counts at which a verdict may be taken: `rounds`, doubling, up to `max_rounds`."""
        sizes = [self.rounds]
        while sizes[-1] < self.max_rounds:
            sizes.append(min(2 * sizes[-1], self.max_rounds))
        return tuple(sizes)

    @property
    def looks(self) -> int:
        return len(self.look_sizes)


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
    host_steal: float | None = None  # share of the CPU time of the timed rounds the hypervisor took
    thread_busy: float | None = None  # share of the rounds the launching thread ran on a CPU (host.ThreadClock)
    thread_switches: float | None = None  # times a round it gave its CPU up (voluntary context switches)
    stopped: str = ""  # why no more rounds were taken: decided, the round cap or the time cap

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
    def flags(self) -> list[Flag]:
        """What the card and the host did during the timed rounds."""
        flags = list(self.telemetry.flags()) if self.telemetry else []
        return flags + host_flags(self.host_stall, self.host_steal)

    @property
    def disturbed(self) -> list[Flag]:
        return [f for f in self.flags if f in DISTURBING]


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
        steady = len(warmup) >= 2 and abs(warmup[-1] - warmup[-2]) <= settings.steady_tolerance * warmup[-2]
        # Rank 0 decides for every rank of a torchrun job: each call may run collectives, so ranks
        # that stopped after different numbers of calls would wait on each other for ever.
        if distributed.from_main(steady):
            break
    log(f"warm-up {len(warmup) + 1} calls, last {warmup[-1] if warmup else first_call_s:.3f} s")
    return first_call_s, warmup


def measure(run: Callable[[], Generation], settings: MeasureSettings, *, cuda: bool,
            decided: Callable[[list[float]], bool] | None = None, benchmark=None,
            log: Callable[[str], None] = lambda _: None, host_pressure: bool = True) -> Timed:
    """Warm up `run`, then time rounds; while `decided(walls)` says the verdict is still open,
    take more (settings.look_sizes), within the case's time cap.

    `benchmark` is a pytest-benchmark fixture: the timed rounds go through its
    `pedantic` so its JSON, --benchmark-save and --benchmark-compare see them.
    `host_pressure` False: the rounds' time is scripted, so the host's load cannot disturb them.
    """
    first_call_s, warmup = warm_up(run, settings, log)
    attempt = 0
    while True:
        attempt += 1
        timed = _timed_rounds(run, settings, cuda, decided, benchmark if attempt == 1 else None, log, host_pressure)
        timed.first_call_s, timed.warmup_wall_s, timed.attempts = first_call_s, warmup, attempt
        # Ranks of a torchrun job must take the same branch (their next rounds are collective).
        if not distributed.from_main(bool(timed.disturbed)) or attempt > settings.remeasure_when_disturbed:
            if timed.disturbed:
                timed.notes.append(f"rounds disturbed ({', '.join(timed.disturbed)}) after {attempt} attempts")
            return timed
        log(f"rounds disturbed ({', '.join(timed.disturbed)}): measuring again")


def _more_rounds(generations: list[Generation], settings: MeasureSettings, decided, elapsed_s: float) -> tuple[int, str]:
    """How many rounds to add now (0: stop), and why the rounds stop when they do."""
    walls = [g.times.wall_ms / 1000.0 for g in generations]
    if decided is None:
        return 0, f"{len(walls)} rounds as asked"
    if decided(walls):
        return 0, f"decided after {len(walls)} rounds"
    later = [size for size in settings.look_sizes if size > len(walls)]
    if not later:
        return 0, f"undecided at the cap of {len(walls)} rounds"
    batch = later[0] - len(walls)
    if elapsed_s + batch * statistics.median(walls) > settings.max_case_seconds:
        return 0, (f"undecided after {len(walls)} rounds: {batch} more would pass the case's "
                   f"{settings.max_case_seconds:.0f} s cap")
    return batch, ""


def _timed_rounds(run, settings: MeasureSettings, cuda: bool, decided, benchmark, log, host_pressure) -> Timed:
    generations: list[Generation] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sampler = TelemetrySampler(torch.cuda.current_device(), settings.telemetry_interval_s) if cuda else None
    if sampler:
        sampler.start()
    pressure = HostPressure() if host_pressure else None
    try:
        with no_recompile(), quiet_host():
            thread = ThreadClock() if host_pressure else None  # after quiet_host's collection: rounds only
            if benchmark is not None and not getattr(benchmark, "disabled", False):
                benchmark.pedantic(lambda: generations.append(run()), rounds=settings.rounds, iterations=1)
                # --benchmark-cprofile calls it again under the profiler after the timed rounds: not rounds.
                del generations[settings.rounds:]
            else:
                generations.extend(run() for _ in range(settings.rounds))
            while True:
                elapsed = sum(g.times.wall_ms for g in generations) / 1000.0
                batch, stopped = _more_rounds(generations, settings, decided, elapsed)
                if not batch:
                    break
                log(f"undecided after {len(generations)} rounds: {batch} more")
                for _ in range(batch):
                    generation = run()
                    generations.append(generation)
                    if benchmark is not None and benchmark.stats is not None:
                        benchmark.stats.update(generation.times.wall_ms / 1000.0)
            busy, switches = (thread.busy_fraction(), thread.switches()) if thread else (None, None)
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
        host_stall=pressure.stall_fraction() if pressure else None,
        host_steal=pressure.steal_fraction() if pressure else None,
        thread_busy=busy, thread_switches=switches / len(generations) if switches is not None else None,
        stopped=stopped,
    )
