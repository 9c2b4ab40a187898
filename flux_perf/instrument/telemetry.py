"""GPU telemetry through NVML: a background sampler of power, clocks, temperature, utilisation
and other processes during the timed rounds, and what they say about the rounds (flags). The card's
identity and every NVML query are nvml.py's.

Telemetry explains a measurement; it must never break one: the sampler thread records its own
crash in `TelemetryReport.reason` instead of raising.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from enum import Enum

from .nvml import (
    MIB,
    POWER_REASONS,
    REASON_BITS,
    THERMAL_REASONS,
    as_text,
    clock_event_reasons,
    decode_clock_event_reasons,
    device_handle,
    nvml_unavailable_reason,
    pynvml,
    query,
    scaled,
)


# --- samples and report --------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since sampler start (time.perf_counter)
    power_w: float | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    temperature_c: float | None
    gpu_util_pct: float | None
    mem_util_pct: float | None
    memory_used_mib: float | None
    clock_event_reasons: int | None  # raw bitmask


def _stats(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _disturbing(processes: list[dict]) -> bool:
    """Whether other processes on the GPU count as a disturbance.

    In a container NVML may report PIDs of the host's PID namespace, so this very
    process can show up under a PID that is not os.getpid(). A PID missing from our
    /proc is therefore reported with "verified": False, since it may be us. Verified
    PIDs always count; unverified ones count only when there are two or more of
    them, since at most one of them can be this process.
    """
    unverified = sum(1 for p in processes if not p.get("verified", True))
    return unverified > 1 or any(p.get("verified", True) for p in processes)


def _is_busy(sample: Sample) -> bool:
    if sample.clock_event_reasons is not None and sample.clock_event_reasons & REASON_BITS["GpuIdle"]:
        return False
    return sample.gpu_util_pct is None or sample.gpu_util_pct > 0


class Flag(str, Enum):
    """What the card or host did during the timed rounds (a str, so JSON and old records read alike)."""

    THERMAL = "thermal-throttle"
    POWER = "power-throttle"
    HW_SLOWDOWN = "hw-slowdown"
    OTHER_PROCESSES = "other-processes"
    CLOCK_BELOW_MAX = "clock-below-max"
    CPU_CONTENTION = "cpu-contention"
    CPU_STEAL = "cpu-steal"

    def __str__(self) -> str:
        return self.value


# Flags that make timed rounds unrepresentative of the card: measured again, then `disturbed`.
# A power cap is not among them: a loaded H100 sits at its power limit as a matter of course.
DISTURBING = (Flag.THERMAL, Flag.HW_SLOWDOWN, Flag.OTHER_PROCESSES, Flag.CPU_CONTENTION, Flag.CPU_STEAL)


@dataclass
class TelemetryReport:
    available: bool
    reason: str | None = None  # why unavailable, or what went wrong while sampling
    samples: list[Sample] = field(default_factory=list)
    duration_s: float = 0.0
    energy_j: float | None = None
    other_processes: list[dict] = field(default_factory=list)  # pid, name, used_memory_mib, verified
    energy_source: str | None = None  # "counter" | "power-integral" | None
    max_sm_clock_mhz: int | None = None  # for the "clock-below-max" flag
    interval_s: float | None = None  # the sampler's interval: its NVML calls share the process with the rounds

    def clock_event_mask(self) -> int:
        mask = 0
        for s in self.samples:
            mask |= s.clock_event_reasons or 0
        return mask

    def flags(self) -> list[Flag]:
        mask = self.clock_event_mask()
        flags = []
        if mask & THERMAL_REASONS:
            flags.append(Flag.THERMAL)
        if mask & POWER_REASONS:
            flags.append(Flag.POWER)
        if mask & REASON_BITS["HwSlowdown"]:
            flags.append(Flag.HW_SLOWDOWN)
        if _disturbing(self.other_processes):
            flags.append(Flag.OTHER_PROCESSES)
        busy = [s.sm_clock_mhz for s in self.samples if _is_busy(s) and s.sm_clock_mhz is not None]
        if busy and self.max_sm_clock_mhz and statistics.median(busy) < 0.9 * self.max_sm_clock_mhz:
            flags.append(Flag.CLOCK_BELOW_MAX)
        return flags

    @property
    def sm_clock_median_mhz(self) -> float | None:
        clocks = [x.sm_clock_mhz for x in self.samples if x.sm_clock_mhz is not None]
        return float(statistics.median(clocks)) if clocks else None

    def summary(self) -> dict:
        s = self.samples
        return {
            "available": self.available,
            "reason": self.reason,
            "sample_count": len(s),
            "interval_s": self.interval_s,
            "duration_s": self.duration_s,
            "energy_j": self.energy_j,
            "energy_source": self.energy_source,
            "power_w": _stats(x.power_w for x in s),
            "sm_clock_mhz": _stats(x.sm_clock_mhz for x in s),
            "mem_clock_mhz": _stats(x.mem_clock_mhz for x in s),
            "temperature_c": _stats(x.temperature_c for x in s),
            "gpu_util_pct": _stats(x.gpu_util_pct for x in s),
            "mem_util_pct": _stats(x.mem_util_pct for x in s),
            "memory_used_mib": _stats(x.memory_used_mib for x in s),
            "max_sm_clock_mhz": self.max_sm_clock_mhz,
            "clock_event_reasons": decode_clock_event_reasons(self.clock_event_mask()),
            "flags": [flag.value for flag in self.flags()],
            "other_processes": [dict(p) for p in self.other_processes],
        }

    def to_dict(self, include_samples: bool = True) -> dict:
        data = self.summary()
        if include_samples:
            data["samples"] = [dataclasses.asdict(x) for x in self.samples]
        return data

    def energy_per_image_j(self, images: int) -> float | None:
        if self.energy_j is None or images <= 0:
            return None
        return self.energy_j / images


def _power_integral_j(samples: list[Sample]) -> float | None:
    """Trapezoid over consecutive samples that both have power; None with fewer than two."""
    points = [(s.t_s, s.power_w) for s in samples if s.power_w is not None]
    if len(points) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(points, points[1:]))


def _pid_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


# --- sampler -------------------------------------------------------------------
class TelemetrySampler:
    """Samples NVML in a daemon thread every `interval_s` between start() and stop(). Context manager too.

    One sample is taken at start() and one at stop(), so even a short run has two;
    the energy counter is read at the same two moments.
    """

    def __init__(self, index: int = 0, interval_s: float = 0.05):
        self.index = index
        self.interval_s = max(float(interval_s), 0.001)
        self.report: TelemetryReport | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._samples: list[Sample] = []
        self._processes: dict[int, dict] = {}
        self._unsupported: set[str] = set()
        self._errors: list[str] = []
        self._handle = None
        self._reason: str | None = None
        self._t0: float | None = None
        self._energy_start_mj = None
        self._max_sm_clock: int | None = None

    # -- lifecycle --
    def start(self) -> None:
        if self._t0 is not None:
            return  # already started: a second start would split the report
        self._t0 = time.perf_counter()
        self._reason = nvml_unavailable_reason()
        if self._reason is not None:
            return
        try:
            self._handle = device_handle(self.index)
        except LookupError as exc:
            self._reason = str(exc)
            return
        self._max_sm_clock = query("nvmlDeviceGetMaxClockInfo", self._handle, getattr(pynvml, "NVML_CLOCK_SM", 1))
        self._energy_start_mj = query("nvmlDeviceGetTotalEnergyConsumption", self._handle, unsupported=self._unsupported)
        self._guarded_sample()
        self._thread = threading.Thread(target=self._run, name=f"nvml-telemetry-{self.index}", daemon=True)
        self._thread.start()

    def stop(self) -> TelemetryReport:
        if self.report is not None:
            return self.report
        if self._t0 is None:
            self.report = TelemetryReport(available=False, reason="sampler was never started",
                                          interval_s=self.interval_s)
            return self.report
        if self._handle is None:
            self.report = TelemetryReport(
                available=False, reason=self._reason, duration_s=time.perf_counter() - self._t0,
                interval_s=self.interval_s,
            )
            return self.report
        self._stop.set()
        if self._thread is not None:
            # A hung NVML call must not hang the test: give up on the thread after a while.
            self._thread.join(timeout=max(5.0, 10 * self.interval_s))
            if self._thread.is_alive():
                self._errors.append("sampler thread did not stop in time")
        self._guarded_sample()
        energy_end_mj = query("nvmlDeviceGetTotalEnergyConsumption", self._handle, unsupported=self._unsupported)
        duration = time.perf_counter() - self._t0
        samples = sorted(list(self._samples), key=lambda s: s.t_s)

        energy_j, source = None, None
        if self._energy_start_mj is not None and energy_end_mj is not None and energy_end_mj >= self._energy_start_mj:
            energy_j, source = (energy_end_mj - self._energy_start_mj) / 1000.0, "counter"  # mJ -> J
        else:
            energy_j = _power_integral_j(samples)
            source = "power-integral" if energy_j is not None else None

        self.report = TelemetryReport(
            available=True,
            reason="; ".join(self._errors) or None,
            samples=samples,
            duration_s=duration,
            energy_j=energy_j,
            other_processes=[dict(p) for p in sorted(list(self._processes.values()), key=lambda p: p["pid"])],
            energy_source=source,
            max_sm_clock_mhz=self._max_sm_clock,
            interval_s=self.interval_s,
        )
        return self.report

    def __enter__(self) -> TelemetrySampler:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.stop()
        return False

    # -- sampling --
    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._guarded_sample():
                return  # recorded; sampling again would most likely fail the same way

    def _guarded_sample(self) -> bool:
        # The sampler shares the process with the measurement: never let it raise.
        try:
            self._sample_once()
            return True
        except Exception as exc:  # noqa: BLE001
            self._errors.append(f"telemetry sampling failed: {type(exc).__name__}: {exc}")
            return False

    def _sample_once(self) -> None:
        h, skip = self._handle, self._unsupported
        t = time.perf_counter() - self._t0
        sm, mem = getattr(pynvml, "NVML_CLOCK_SM", 1), getattr(pynvml, "NVML_CLOCK_MEM", 2)
        util = query("nvmlDeviceGetUtilizationRates", h, unsupported=skip)
        memory = query("nvmlDeviceGetMemoryInfo", h, unsupported=skip)
        temperature = query("nvmlDeviceGetTemperature", h, getattr(pynvml, "NVML_TEMPERATURE_GPU", 0), unsupported=skip)
        self._samples.append(
            Sample(
                t_s=t,
                # Recent drivers report a ~1 s average here on Hopper: the energy counter is the better total.
                power_w=scaled(query("nvmlDeviceGetPowerUsage", h, unsupported=skip), 1000.0),  # mW
                sm_clock_mhz=query("nvmlDeviceGetClockInfo", h, sm, unsupported=skip),
                mem_clock_mhz=query("nvmlDeviceGetClockInfo", h, mem, unsupported=skip),
                temperature_c=scaled(temperature, 1.0),
                gpu_util_pct=scaled(getattr(util, "gpu", None), 1.0),
                mem_util_pct=scaled(getattr(util, "memory", None), 1.0),
                memory_used_mib=scaled(getattr(memory, "used", None), MIB),
                clock_event_reasons=clock_event_reasons(h, skip),
            )
        )
        self._record_processes()

    def _record_processes(self) -> None:
        own = os.getpid()
        for listing in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for proc in query(listing, self._handle, unsupported=self._unsupported) or []:
                pid = getattr(proc, "pid", None)
                if not isinstance(pid, int) or pid == own:
                    continue
                used = scaled(getattr(proc, "usedGpuMemory", None), MIB)
                seen = self._processes.get(pid)
                if seen is None:
                    self._processes[pid] = {
                        "pid": pid,
                        "name": as_text(query("nvmlSystemGetProcessName", pid)),
                        "used_memory_mib": used,
                        "verified": _pid_exists(pid),
                    }
                elif used is not None and (seen["used_memory_mib"] is None or used > seen["used_memory_mib"]):
                    seen["used_memory_mib"] = used  # keep the peak seen
