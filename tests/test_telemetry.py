"""CPU tests of flux_perf.instrument.telemetry: without NVML, and against a fake NVML (patched pynvml)."""

from __future__ import annotations

import inspect
import json
import os
import re
import time
from types import SimpleNamespace

import pynvml
import pytest

from flux_perf.instrument import nvml
from flux_perf.instrument.nvml import GpuIdentity, decode_clock_event_reasons, gpu_identity, nvml_unavailable_reason
from flux_perf.instrument.telemetry import Sample, TelemetryReport, TelemetrySampler

SW_POWER_CAP, HW_SLOWDOWN, SW_THERMAL, GPU_IDLE = 0x4, 0x8, 0x20, 0x1
NO_SUCH_PID = 99_999_999  # above Linux's largest pid_max (2**22)


class FakeGpu:
    """One H100-like GPU. Tests change attributes while a sampler runs."""

    def __init__(self):
        self.name = "NVIDIA H100 80GB HBM3"
        self.uuid = "GPU-12345678-aaaa-bbbb-cccc-0123456789ab"
        self.power_mw = 350_000
        self.sm_clock = 1980
        self.mem_clock = 2619
        self.temperature = 55
        self.util = (97, 40)
        self.memory_used = 40 * 2**30
        self.reasons = 0
        self.energy_mj = 1_000_000
        self.processes: list[int] = [os.getpid()]
        self.failing: dict[str, int] = {}  # pynvml function name -> NVML error code it raises
        self.calls: dict[str, int] = {}
        self.handle_indices: list[int] = []


@pytest.fixture
def gpu(monkeypatch) -> FakeGpu:
    fake = FakeGpu()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(nvml, "_nvml_state", None)  # re-run the once-per-process init against the fake

    # Anything not faked below answers "not supported" rather than touching a real library.
    def not_supported(*args, **kwargs):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    for name, obj in vars(pynvml).items():
        if name.startswith("nvml") and inspect.isfunction(obj):
            monkeypatch.setattr(pynvml, name, not_supported)

    def handle_by_index(i):
        if i >= 4:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        fake.handle_indices.append(i)
        return ("handle", i)

    def clock(kind, value_sm, value_mem):
        return value_sm if kind == pynvml.NVML_CLOCK_SM else value_mem

    answers = {
        "nvmlInit": lambda: None,
        "nvmlDeviceGetCount": lambda: 4,
        "nvmlDeviceGetHandleByIndex": handle_by_index,
        "nvmlDeviceGetName": lambda h: fake.name,
        "nvmlDeviceGetUUID": lambda h: fake.uuid if h == ("handle", 0) else f"GPU-other-{h[1]}",
        "nvmlSystemGetDriverVersion": lambda: "580.65.06",
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 13000,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
        "nvmlDeviceGetMaxClockInfo": lambda h, kind: clock(kind, 1980, 2619),
        "nvmlDeviceGetDefaultApplicationsClock": lambda h, kind: clock(kind, 1755, 2619),
        "nvmlDeviceGetApplicationsClock": lambda h, kind: clock(kind, 1755, 2619),
        "nvmlDeviceGetPersistenceMode": lambda h: pynvml.NVML_FEATURE_ENABLED,
        "nvmlDeviceGetComputeMode": lambda h: pynvml.NVML_COMPUTEMODE_DEFAULT,
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=80 * 2**30, used=fake.memory_used),
        "nvmlDeviceGetPowerUsage": lambda h: fake.power_mw,
        "nvmlDeviceGetClockInfo": lambda h, kind: clock(kind, fake.sm_clock, fake.mem_clock),
        "nvmlDeviceGetTemperature": lambda h, sensor: fake.temperature,
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=fake.util[0], memory=fake.util[1]),
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: fake.energy_mj,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: fake.reasons,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [
            SimpleNamespace(pid=pid, usedGpuMemory=2 * 2**30) for pid in fake.processes
        ],
        "nvmlDeviceGetGraphicsRunningProcesses": lambda h: [],
        "nvmlSystemGetProcessName": lambda pid: f"proc-{pid}",
    }

    def counted(name, fn):
        def call(*args):
            fake.calls[name] = fake.calls.get(name, 0) + 1
            if name in fake.failing:
                raise pynvml.NVMLError(fake.failing[name])
            return fn(*args)

        return call

    for name, fn in answers.items():
        monkeypatch.setattr(pynvml, name, counted(name, fn))
    return fake


def sample_for(gpu: FakeGpu, seconds: float = 0.02, **changes) -> TelemetryReport:
    """Run a sampler for `seconds`, applying `changes` to the fake GPU midway."""
    with TelemetrySampler(interval_s=0.002) as sampler:
        time.sleep(seconds / 2)
        for key, value in changes.items():
            setattr(gpu, key, value)
        time.sleep(seconds / 2)
    return sampler.report


# --- without NVML -------------------------------------------------------------------


@pytest.fixture
def no_nvml(monkeypatch):
    def library_not_found():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(nvml, "_nvml_state", None)
    monkeypatch.setattr(pynvml, "nvmlInit", library_not_found)


def test_without_nvml_identity_is_none_with_a_reason(no_nvml):
    assert gpu_identity() is None
    reason = nvml_unavailable_reason()
    assert isinstance(reason, str) and "not found" in reason


def test_without_nvml_sampler_reports_unavailable(no_nvml):
    with TelemetrySampler(interval_s=0.001) as sampler:
        time.sleep(0.005)
    report = sampler.report
    assert report is not None and report.available is False
    assert report.reason == nvml_unavailable_reason()
    assert report.samples == [] and report.energy_j is None and report.other_processes == []
    assert report.flags() == []
    assert report.duration_s >= 0.004
    summary = json.loads(json.dumps(report.summary()))
    assert summary["available"] is False and summary["sample_count"] == 0 and summary["flags"] == []
    data = json.loads(json.dumps(report.to_dict()))
    assert data["samples"] == [] and data["reason"] == report.reason
    assert report.energy_per_image_j(4) is None


def test_real_nvml_state_is_consistent(monkeypatch):
    # On this CPU machine NVML is missing; on a GPU box the two must still agree.
    monkeypatch.setattr(nvml, "_nvml_state", None)
    reason = nvml_unavailable_reason()
    assert (gpu_identity() is None) == (reason is not None)


def test_stop_without_start_does_not_raise():
    report = TelemetrySampler().stop()
    assert report.available is False and report.reason


# --- fake NVML ------------------------------------------------------------------------


def test_identity_fields(gpu):
    ident = gpu_identity()
    assert isinstance(ident, GpuIdentity)
    assert ident.index == 0
    assert ident.name == "NVIDIA H100 80GB HBM3"
    assert ident.uuid == gpu.uuid
    assert ident.driver_version == "580.65.06"
    assert ident.cuda_driver_version == "13.0"
    assert ident.power_limit_w == 700.0
    assert (ident.max_sm_clock_mhz, ident.max_mem_clock_mhz) == (1980, 2619)
    assert (ident.default_app_sm_clock_mhz, ident.app_sm_clock_mhz) == (1755, 1755)
    assert ident.persistence_mode is True and ident.compute_mode == "default"
    assert ident.memory_total_mib == 80 * 1024
    assert ident.slug == "nvidia-h100-80gb-hbm3"
    data = json.loads(json.dumps(ident.to_dict()))
    assert data["slug"] == ident.slug and data["uuid"] == gpu.uuid
    assert nvml_unavailable_reason() is None


def test_slug_is_filesystem_safe(gpu):
    gpu.name = " NVIDIA H100/PCIe (80GB) \\ äx"
    slug = gpu_identity().slug
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", slug), slug
    assert slug.startswith("nvidia-h100-pcie")


def test_unsupported_identity_query_gives_none(gpu):
    gpu.failing["nvmlDeviceGetApplicationsClock"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    gpu.failing["nvmlDeviceGetPersistenceMode"] = pynvml.NVML_ERROR_NO_PERMISSION
    ident = gpu_identity()
    assert ident.app_sm_clock_mhz is None and ident.persistence_mode is None
    assert ident.default_app_sm_clock_mhz == 1755 and ident.power_limit_w == 700.0


def test_cuda_visible_devices_selects_the_nvml_device(gpu, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    gpu.handle_indices.clear()
    assert gpu_identity(1).uuid == "GPU-other-3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpu.uuid[:12])  # CUDA accepts UUID prefixes
    assert gpu_identity(0).uuid == gpu.uuid
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu_identity(1) is None  # not visible to CUDA: nothing, and no exception


def test_sampler_collects_samples(gpu):
    report = sample_for(gpu, 0.03)
    assert report.available is True and report.reason is None
    assert len(report.samples) >= 3
    times = [s.t_s for s in report.samples]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= report.duration_s
    first = report.samples[0]
    assert first == Sample(
        t_s=first.t_s, power_w=350.0, sm_clock_mhz=1980, mem_clock_mhz=2619, temperature_c=55.0,
        gpu_util_pct=97.0, mem_util_pct=40.0, memory_used_mib=40 * 1024.0, clock_event_reasons=0,
    )
    assert report.flags() == []
    summary = json.loads(json.dumps(report.summary()))
    assert summary["power_w"] == {"median": 350.0, "min": 350.0, "max": 350.0}
    assert summary["sample_count"] == len(report.samples)
    assert summary["interval_s"] == 0.002, "the record says how often NVML was asked (--flux-telemetry-interval)"
    assert summary["other_processes"] == []
    data = json.loads(json.dumps(report.to_dict()))
    assert len(data["samples"]) == len(report.samples)
    assert "samples" not in report.to_dict(include_samples=False)


def test_energy_is_counter_delta_in_joules(gpu):
    gpu.energy_mj = 1_000_000
    report = sample_for(gpu, energy_mj=1_250_500)
    assert report.energy_source == "counter"
    assert report.energy_j == pytest.approx(250.5)
    assert report.energy_per_image_j(5) == pytest.approx(50.1)
    assert report.summary()["energy_source"] == "counter"


def test_energy_falls_back_to_power_integral(gpu):
    gpu.failing["nvmlDeviceGetTotalEnergyConsumption"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    gpu.power_mw = 300_000
    report = sample_for(gpu)
    span = report.samples[-1].t_s - report.samples[0].t_s
    assert span > 0
    assert report.energy_source == "power-integral"
    assert report.energy_j == pytest.approx(300.0 * span)


@pytest.mark.parametrize(
    "mask, flag",
    [(SW_THERMAL, "thermal-throttle"), (SW_POWER_CAP, "power-throttle"), (HW_SLOWDOWN, "hw-slowdown")],
)
def test_clock_event_reasons_give_flags(gpu, mask, flag):
    report = sample_for(gpu, reasons=mask)
    assert report.flags() == [flag]
    assert report.samples[-1].clock_event_reasons == mask
    assert decode_clock_event_reasons(mask)[0] in report.summary()["clock_event_reasons"]


def test_clock_below_max_ignores_idle_samples(gpu):
    gpu.sm_clock = 1500  # < 90 % of 1980
    assert "clock-below-max" in sample_for(gpu).flags()
    gpu.reasons, gpu.util = GPU_IDLE, (0, 0)
    assert sample_for(gpu).flags() == []


def test_decode_clock_event_reasons():
    assert decode_clock_event_reasons(0) == []
    assert decode_clock_event_reasons(GPU_IDLE | SW_POWER_CAP | SW_THERMAL) == [
        "GpuIdle", "SwPowerCap", "SwThermalSlowdown",
    ]
    assert decode_clock_event_reasons(0x40 | 0x80 | 0x400) == [
        "HwThermalSlowdown", "HwPowerBrakeSlowdown", "unknown(0x400)",
    ]


def test_foreign_verified_process_is_flagged(gpu):
    gpu.processes = [os.getpid(), 1]  # pid 1 exists in every /proc
    report = sample_for(gpu)
    assert report.other_processes == [{"pid": 1, "name": "proc-1", "used_memory_mib": 2048.0, "verified": True}]
    assert "other-processes" in report.flags()


def test_own_process_is_not_flagged(gpu):
    gpu.processes = [os.getpid()]
    report = sample_for(gpu)
    assert report.other_processes == [] and report.flags() == []


def test_unverified_pids_count_only_when_more_than_one(gpu):
    gpu.processes = [NO_SUCH_PID]  # may be this process seen from another PID namespace
    report = sample_for(gpu)
    assert [(p["pid"], p["verified"]) for p in report.other_processes] == [(NO_SUCH_PID, False)]
    assert "other-processes" not in report.flags()
    gpu.processes = [NO_SUCH_PID, NO_SUCH_PID + 1]
    assert "other-processes" in sample_for(gpu).flags()


def test_process_seen_midway_is_reported(gpu):
    report = sample_for(gpu, processes=[os.getpid(), 1])
    assert [p["pid"] for p in report.other_processes] == [1]


def test_failing_query_gives_none_for_that_field_only(gpu):
    gpu.failing["nvmlDeviceGetTemperature"] = pynvml.NVML_ERROR_UNKNOWN
    report = sample_for(gpu)
    assert report.available is True and report.reason is None and report.samples
    assert all(s.temperature_c is None for s in report.samples)
    assert all(s.power_w == 350.0 and s.sm_clock_mhz == 1980 for s in report.samples)
    assert report.summary()["temperature_c"] is None


def test_unsupported_query_is_not_repeated(gpu):
    gpu.failing["nvmlDeviceGetTemperature"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    report = sample_for(gpu)
    assert len(report.samples) >= 2
    assert gpu.calls["nvmlDeviceGetTemperature"] == 1


def test_sampler_thread_failure_is_recorded_not_raised(gpu, monkeypatch):
    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(TelemetrySampler, "_sample_once", broken)
    report = sample_for(gpu)
    assert report.available is True
    assert "boom" in report.reason
    assert report.samples == []
    json.dumps(report.to_dict())
