"""The host's CPU during the timed rounds, from two sources:

- pressure (Linux PSI, /proc/pressure/cpu): the share of time in which runnable tasks waited for a
  CPU of this machine;
- steal (/proc/stat): the share of CPU time the hypervisor gave to others while this VM wanted it,
  which PSI does not see (the guest's scheduler thinks its tasks ran).

Host-bound rounds (every CPU round, a GPU case that issues kernels faster than the card runs them)
slow down under either, so a slow case on such a host is `disturbed`, never a regression of the code."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

from .telemetry import Flag

PSI_CPU = Path("/proc/pressure/cpu")
PROC_STAT = Path("/proc/stat")
# Tasks waited for a CPU this share of the timed rounds: the host was not the quiet one the
# references were made on. On a quiet machine the suite's own threads stay under 1 %.
CONTENTION = 0.10
# The hypervisor took this share of the VM's CPU time: as much as PSI's contention, unseen by PSI.
STEAL = 0.10


def cpu_stall_us(path: Path = PSI_CPU) -> float | None:
    """Total microseconds in which some runnable task waited for a CPU; None without PSI."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("some "):
                return float(dict(field.split("=") for field in line.split()[1:])["total"])
    except (OSError, ValueError, KeyError):
        return None
    return None


@dataclass(frozen=True)
class CpuTicks:
    """The aggregate `cpu` line of /proc/stat: ticks stolen by the hypervisor, and all ticks."""

    steal: int
    total: int


def cpu_ticks(path: Path = PROC_STAT) -> CpuTicks | None:
    """The machine's CPU ticks so far; None when /proc/stat is missing, unreadable or garbled."""
    try:
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields[:1] == ["cpu"]:
                # user nice system idle iowait irq softirq steal; guest and guest_nice follow, but
                # are already counted in user and nice, so they stay out of the total.
                ticks = [int(field) for field in fields[1:9]]
                return CpuTicks(ticks[7], sum(ticks)) if len(ticks) == 8 and min(ticks) >= 0 else None
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return None


class HostPressure:
    """Started before the timed rounds, read after them."""

    def __init__(self, path: Path = PSI_CPU, stat: Path = PROC_STAT):
        self.path, self.stat = path, stat
        self.start_us = cpu_stall_us(path)
        self.start_s = time.monotonic()
        self.start_ticks = cpu_ticks(stat)

    def stall_fraction(self) -> float | None:
        end_us, elapsed = cpu_stall_us(self.path), time.monotonic() - self.start_s
        if self.start_us is None or end_us is None or elapsed <= 0:
            return None
        return max(0.0, (end_us - self.start_us) / 1e6 / elapsed)

    def steal_fraction(self) -> float | None:
        """The share of all CPU time since the start that the hypervisor took; None without
        /proc/stat or when no tick passed (ticks are 1/100 s a CPU)."""
        end, start = cpu_ticks(self.stat), self.start_ticks
        if start is None or end is None or end.total <= start.total:
            return None
        # Some hypervisors' steal counter has stepped back: never a negative share.
        return min(1.0, max(0.0, (end.steal - start.steal) / (end.total - start.total)))


class ThreadClock:
    """The calling thread's own CPU time and voluntary context switches, from start to read.

    The thread that launches the kernels spins while it waits for the GPU, so on a quiet host it is
    on a CPU for the whole round, host- and device-bound alike. A share well under 1 is time it
    spent off the CPU: waiting for the GIL another thread held, for a lock, or for a hypervisor that
    ran another VM. A share near 1 with slow rounds is a thread that had more to do, or a slower CPU.
    Read it on the thread that started it."""

    def __init__(self):
        self.start_cpu_s, self.start_wall_s = time.thread_time(), time.perf_counter()
        self.start_switches = _voluntary_switches()

    def busy_fraction(self) -> float | None:
        """The share of the wall time since the start that this thread ran on a CPU."""
        elapsed = time.perf_counter() - self.start_wall_s
        return min(1.0, (time.thread_time() - self.start_cpu_s) / elapsed) if elapsed > 0 else None

    def switches(self) -> int | None:
        """How many times this thread gave up its CPU since the start (None off Linux)."""
        now = _voluntary_switches()
        return None if now is None or self.start_switches is None else now - self.start_switches


def describe_thread(busy: float | None, switches: float | None) -> str:
    """A ThreadClock's readings over the timed rounds as one sentence; "" when it was not read."""
    if busy is None:
        return ""
    gave_up = f", giving it up {switches:.0f} times a round" if switches is not None else ""
    # The one measured point of comparison, not a threshold: 16 cases on a quiet H100 (fifteenth session).
    return (f"The thread launching its kernels was on a CPU {busy:.1%} of the rounds{gave_up} (a quiet H100 "
            "read 99.7-99.98 %; a thread that waited for the GIL, a lock or the hypervisor reads less).")


def _voluntary_switches() -> int | None:
    if not hasattr(resource, "RUSAGE_THREAD"):  # Linux only
        return None
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def host_flags(stall: float | None, steal: float | None) -> list[Flag]:
    """The disturbance flags of a host that was this busy (None: not read): the one threshold
    rule, for the suite's timed rounds and the A/B's blocks alike."""
    flags = [Flag.CPU_CONTENTION] if stall is not None and stall > CONTENTION else []
    return flags + ([Flag.CPU_STEAL] if steal is not None and steal > STEAL else [])
