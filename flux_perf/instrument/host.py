"""The host's CPU pressure (Linux PSI, /proc/pressure/cpu): the share of time in which runnable
tasks waited for a CPU. Host-bound rounds (every CPU round, a GPU case that issues kernels
faster than the card runs them) slow down under it, so a slow case on a contended host is
`disturbed`, never a regression of the code."""

from __future__ import annotations

import time
from pathlib import Path

PSI_CPU = Path("/proc/pressure/cpu")
# Tasks waited for a CPU this share of the timed rounds: the host was not the quiet one the
# references were made on. On a quiet machine the suite's own threads stay under 1 %.
CONTENTION = 0.10


def cpu_stall_us(path: Path = PSI_CPU) -> float | None:
    """Total microseconds in which some runnable task waited for a CPU; None without PSI."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("some "):
                return float(dict(field.split("=") for field in line.split()[1:])["total"])
    except (OSError, ValueError, KeyError):
        return None
    return None


class HostPressure:
    """Started before the timed rounds, read after them."""

    def __init__(self, path: Path = PSI_CPU):
        self.path = path
        self.start_us = cpu_stall_us(path)
        self.start_s = time.monotonic()

    def stall_fraction(self) -> float | None:
        end_us, elapsed = cpu_stall_us(self.path), time.monotonic() - self.start_s
        if self.start_us is None or end_us is None or elapsed <= 0:
            return None
        return max(0.0, (end_us - self.start_us) / 1e6 / elapsed)
