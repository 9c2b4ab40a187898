"""NVML (nvidia-ml-py), asked safely: the card's identity, its clock-event reasons, and queries
that turn any failure (unsupported on this GPU, no permission, old driver, missing binding) into
None. Nothing here changes GPU settings: no `nvmlDeviceSet*` calls.

`index` is the CUDA device ordinal as this process sees it (what torch calls `cuda:<index>`).
NVML ignores CUDA_VISIBLE_DEVICES, so `device_handle` maps the ordinal through it; otherwise
`cuda:0` of a job pinned to GPU 3 would be reported with GPU 0's clocks and processes.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but a broken env must not break imports
    pynvml = None

MIB = 2**20

# --- NVML initialisation -------------------------------------------------------
# nvmlInit once per process; (ok, reason) once tried. Never shut NVML down: a
# sampler thread of another measurement may still be querying it.
_nvml_lock = threading.Lock()
_nvml_state: tuple[bool, str | None] | None = None


def _init_failure_reason(exc: BaseException) -> str:
    if pynvml is not None and isinstance(exc, pynvml.NVMLError):
        value = getattr(exc, "value", None)
        if value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
            return "NVML library not found (no NVIDIA driver on this machine)"
        if value == pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
            return "NVIDIA driver not loaded"
        if value == pynvml.NVML_ERROR_NO_PERMISSION:
            return "no permission to use NVML"
        return f"NVML init failed: {exc}"
    return f"NVML init failed: {type(exc).__name__}: {exc}"


def _ensure_nvml() -> str | None:
    """Initialise NVML once; return None when it works, else why not."""
    global _nvml_state
    with _nvml_lock:
        if _nvml_state is None:
            if pynvml is None:
                _nvml_state = (False, "nvidia-ml-py (pynvml) is not installed")
            else:
                try:
                    pynvml.nvmlInit()
                    count = pynvml.nvmlDeviceGetCount()
                    _nvml_state = (True, None) if count > 0 else (False, "NVML sees no GPU")
                except Exception as exc:  # noqa: BLE001 - any failure means "no telemetry"
                    _nvml_state = (False, _init_failure_reason(exc))
        return _nvml_state[1]


def nvml_unavailable_reason() -> str | None:
    """None when NVML works, else a short human reason. Never raises."""
    return _ensure_nvml()


def query(name: str, *args, unsupported: set[str] | None = None):
    """Call `pynvml.<name>(*args)`; None on any failure.

    With `unsupported`, remembers queries this GPU does not support so a sampler
    stops asking every tick.
    """
    if unsupported is not None and name in unsupported:
        return None
    try:
        return getattr(pynvml, name)(*args)
    except Exception as exc:  # noqa: BLE001 - one failing query must not lose the rest
        if unsupported is not None and (
            isinstance(exc, AttributeError)
            or getattr(exc, "value", None)
            in (getattr(pynvml, "NVML_ERROR_NOT_SUPPORTED", 3), getattr(pynvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13))
        ):
            unsupported.add(name)
        return None


def as_text(value) -> str | None:
    """An NVML string (bytes in older bindings) as text; None stays None."""
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def device_handle(index: int):
    """NVML handle of CUDA device `index`, honouring CUDA_VISIBLE_DEVICES. Raises LookupError."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        nvml_index = index
    else:
        entries = [e.strip() for e in visible.split(",")]
        if not 0 <= index < len(entries) or not entries[index]:
            raise LookupError(f"CUDA device {index} is not in CUDA_VISIBLE_DEVICES={visible!r}")
        entry = entries[index]
        if entry.isdigit():
            nvml_index = int(entry)
        elif entry.startswith("GPU-"):
            # CUDA accepts UUID prefixes; NVML's by-UUID lookup needs the full one.
            count = query("nvmlDeviceGetCount") or 0
            for i in range(count):
                handle = query("nvmlDeviceGetHandleByIndex", i)
                uuid = as_text(query("nvmlDeviceGetUUID", handle)) if handle is not None else None
                if uuid and uuid.startswith(entry):
                    return handle
            raise LookupError(f"no GPU matches {entry!r} from CUDA_VISIBLE_DEVICES")
        else:
            raise LookupError(f"CUDA_VISIBLE_DEVICES entry {entry!r} (MIG instance?) not mapped to an NVML device")
    handle = query("nvmlDeviceGetHandleByIndex", nvml_index)
    if handle is None:
        raise LookupError(f"NVML has no GPU with index {nvml_index}")
    return handle


# --- identity ------------------------------------------------------------------
def gpu_slug(name: str) -> str:
    """Folder name of a GPU model ('NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'). The one
    rule for NVML's and torch's names alike, so baselines land in one folder either way."""
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower()).strip("-") or "unknown-gpu"


_COMPUTE_MODES = {0: "default", 1: "exclusive-thread", 2: "prohibited", 3: "exclusive-process"}


@dataclass(frozen=True)
class GpuIdentity:
    index: int
    name: str
    uuid: str | None
    driver_version: str | None
    cuda_driver_version: str | None  # e.g. "13.0"
    power_limit_w: float | None  # enforced power limit
    max_sm_clock_mhz: int | None
    max_mem_clock_mhz: int | None
    default_app_sm_clock_mhz: int | None
    app_sm_clock_mhz: int | None
    persistence_mode: bool | None
    compute_mode: str | None
    memory_total_mib: float | None

    @property
    def slug(self) -> str:
        return gpu_slug(self.name)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "slug": self.slug}


def _cuda_version_text(version) -> str | None:
    if not isinstance(version, int) or version <= 0:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"  # 13000 -> "13.0", 12080 -> "12.8"


def scaled(value, divisor: float) -> float | None:
    """An NVML reading in other units (mW -> W, bytes -> MiB); None stays None."""
    return None if value is None else float(value) / divisor


def gpu_identity(index: int = 0) -> GpuIdentity | None:
    """Static facts about CUDA device `index`; None when NVML is unavailable. Never raises."""
    if _ensure_nvml() is not None:
        return None
    try:
        handle = device_handle(index)
    except LookupError:
        return None
    sm, mem = getattr(pynvml, "NVML_CLOCK_SM", 1), getattr(pynvml, "NVML_CLOCK_MEM", 2)
    cuda = query("nvmlSystemGetCudaDriverVersion_v2")
    if cuda is None:
        cuda = query("nvmlSystemGetCudaDriverVersion")
    persistence = query("nvmlDeviceGetPersistenceMode", handle)
    compute_mode = query("nvmlDeviceGetComputeMode", handle)
    memory = query("nvmlDeviceGetMemoryInfo", handle)
    return GpuIdentity(
        index=index,
        name=as_text(query("nvmlDeviceGetName", handle)) or "unknown-gpu",
        uuid=as_text(query("nvmlDeviceGetUUID", handle)),
        driver_version=as_text(query("nvmlSystemGetDriverVersion")),
        cuda_driver_version=_cuda_version_text(cuda),
        power_limit_w=scaled(query("nvmlDeviceGetEnforcedPowerLimit", handle), 1000.0),  # mW
        max_sm_clock_mhz=query("nvmlDeviceGetMaxClockInfo", handle, sm),
        max_mem_clock_mhz=query("nvmlDeviceGetMaxClockInfo", handle, mem),
        default_app_sm_clock_mhz=query("nvmlDeviceGetDefaultApplicationsClock", handle, sm),
        app_sm_clock_mhz=query("nvmlDeviceGetApplicationsClock", handle, sm),
        persistence_mode=None if persistence is None else persistence == getattr(pynvml, "NVML_FEATURE_ENABLED", 1),
        compute_mode=None if compute_mode is None else _COMPUTE_MODES.get(compute_mode, str(compute_mode)),
        memory_total_mib=scaled(getattr(memory, "total", None), MIB),
    )


# --- clock event (throttle) reasons --------------------------------------------
def _reason_bit(name: str, default: int) -> int:
    for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
        value = getattr(pynvml, prefix + name, None) if pynvml is not None else None
        if isinstance(value, int):
            return value
    return default


CLOCK_EVENT_REASONS: tuple[tuple[str, int], ...] = tuple(
    (name, _reason_bit(name, default))
    for name, default in (
        ("GpuIdle", 0x1),
        ("ApplicationsClocksSetting", 0x2),
        ("SwPowerCap", 0x4),
        ("HwSlowdown", 0x8),
        ("SyncBoost", 0x10),
        ("SwThermalSlowdown", 0x20),
        ("HwThermalSlowdown", 0x40),
        ("HwPowerBrakeSlowdown", 0x80),
        ("DisplayClockSetting", 0x100),
    )
)
REASON_BITS = dict(CLOCK_EVENT_REASONS)  # name -> bit, and the groups telemetry's flags read
THERMAL_REASONS = REASON_BITS["SwThermalSlowdown"] | REASON_BITS["HwThermalSlowdown"]
POWER_REASONS = REASON_BITS["SwPowerCap"] | REASON_BITS["HwPowerBrakeSlowdown"]


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the reasons set in an NVML clock event bitmask; unknown bits as hex."""
    names = [name for name, bit in CLOCK_EVENT_REASONS if mask & bit]
    rest = mask & ~sum(REASON_BITS.values())
    if rest:
        names.append(f"unknown(0x{rest:x})")
    return names


def clock_event_reasons(handle, unsupported: set[str]) -> int | None:
    """The current clock event (throttle) bitmask of `handle`; None when NVML cannot say."""
    # "Throttle" was renamed "ClocksEvent" in NVML 12.2; old bindings only have the former.
    if pynvml is not None and hasattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons"):
        return query("nvmlDeviceGetCurrentClocksEventReasons", handle, unsupported=unsupported)
    return query("nvmlDeviceGetCurrentClocksThrottleReasons", handle, unsupported=unsupported)


def gpu_line(gpu) -> str:
    """The GPU a run uses, in one line of the report header (or why NVML cannot say)."""
    if not gpu:
        return f"flux-perf GPU telemetry unavailable: {nvml_unavailable_reason()}"
    return (f"flux-perf GPU: {gpu.name}, driver {gpu.driver_version}, CUDA {gpu.cuda_driver_version}, "
            f"power limit {gpu.power_limit_w} W, max SM clock {gpu.max_sm_clock_mhz} MHz")
