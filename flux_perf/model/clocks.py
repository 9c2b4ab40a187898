"""Stage clocks: CUDA events on a GPU, the host clock on a CPU, and a scripted clock for tests
of the gate. Same interface.

`mark()` never synchronises, so marks can sit inside the denoising loop; read the intervals with
`elapsed_ms` only after `settle()`. `wall_ms(start_wall())` is the wall time of a whole generation.
"""

from __future__ import annotations

import contextlib
import random
import time

import torch


class WallClock:
    """The host's wall clock around a whole generation."""

    @staticmethod
    def start_wall() -> float:
        return time.perf_counter()

    @staticmethod
    def wall_ms(start: float) -> float:
        return (time.perf_counter() - start) * 1000.0


class CudaEventClock(WallClock):
    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def settle(self) -> None:
        torch.cuda.synchronize(self.device)

    @staticmethod
    def elapsed_ms(start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        return float(start.elapsed_time(end))


class HostClock(WallClock):
    def mark(self) -> float:
        return time.perf_counter()

    def settle(self) -> None:
        pass

    @staticmethod
    def elapsed_ms(start: float, end: float) -> float:
        return (end - start) * 1000.0


class ScriptedClock(HostClock):
    """Test-only: every generation takes `seconds` of scripted wall time, spread by a seeded
    `jitter` (a fraction), whatever the machine does; stage marks stay the host's. It lets the
    CPU suite drive the latency gate to a pass or a failure without depending on a busy CPU's
    speed. Each `wall_ms` is one scripted draw, whatever came before (a generation that failed
    halfway leaves nothing behind)."""

    def __init__(self, seconds: float, jitter: float = 0.002, seed: int = 0):
        if not seconds > 0:
            raise ValueError(f"scripted clock: {seconds!r} s a generation must be positive")
        self.seconds, self.jitter = seconds, jitter
        self._rng = random.Random(seed)

    def wall_ms(self, start: float) -> float:
        return self.seconds * 1000.0 * (1 + self.jitter * self._rng.gauss(0, 1))


def clock_for(device: torch.device | str):
    return CudaEventClock(device) if torch.device(device).type == "cuda" else HostClock()


@contextlib.contextmanager
def stage_range(name: str, cuda: bool):
    """Name a stage for torch.profiler traces and, on a GPU, for Nsight Systems (NVTX)."""
    with torch.profiler.record_function(name):
        if cuda:
            torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            if cuda:
                torch.cuda.nvtx.range_pop()
