"""Stage clocks: CUDA events on a GPU, the host clock on a CPU. Same interface.

`mark()` never synchronises, so marks can sit inside the denoising loop; read
the intervals with `elapsed_ms` only after `settle()`.
"""

from __future__ import annotations

import contextlib
import time

import torch


class CudaEventClock:
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


class HostClock:
    def mark(self) -> float:
        return time.perf_counter()

    def settle(self) -> None:
        pass

    @staticmethod
    def elapsed_ms(start: float, end: float) -> float:
        return (end - start) * 1000.0


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
