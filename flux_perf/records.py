"""The results of a run as typed records: one `CaseRecord` per (stack, scenario), one
`RunResults` per run, read and written here only (results.json).

Readers refuse a schema they do not know, with the version they found and the ones they read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .files import finite_number, write_json

SCHEMA_VERSION = 2
# Version 1 files (written before the records were typed) hold the same keys; nothing newer is
# required of a record, so they read as version 2 with the new fields empty.
READABLE_VERSIONS = (1, 2)
SCHEMA_KEY = "flux_perf_results"


class ResultsError(ValueError):
    """A results.json that is missing, not JSON, of an unknown schema, or not flux-perf's."""


@dataclass
class CaseRecord:
    """Everything measured and judged for one (stack, scenario)."""

    id: str
    stack: str
    stack_key: str
    components: str
    lossless: bool
    scenario: dict
    model: str
    fingerprint: str
    gpu: str | None
    device: str
    effective_scenario: dict | None = None
    injected_slowdown: float | None = None
    planted: str | None = None  # test-only components added to every stack (--flux-plant)
    world_size: int = 1
    error: str | None = None
    build_s: float | None = None
    encode_prompt_s: float | None = None
    apply_s: float | None = None
    # Timing (absent when the case failed before it was timed).
    first_call_s: float | None = None
    compile_s: float | None = None
    warmup_wall_s: list[float] = field(default_factory=list)
    rounds: int = 0
    attempts: int = 0
    wall_s: dict | None = None  # stats.Summary.to_dict() of the end-to-end rounds
    wall_samples_s: list[float] = field(default_factory=list)
    stages_ms: dict | None = None  # medians: encode, denoise, decode, total_device, step_median
    rounds_detail: list[dict] = field(default_factory=list)
    deterministic: bool | None = None
    peak_memory_gib: float | None = None
    host_cpu_stall: float | None = None  # share of the timed rounds tasks waited for a CPU (Linux PSI)
    # Verdicts.
    latency: dict | None = None  # judges.LatencyResult.to_dict()
    fidelity: dict | None = None  # judges.FidelityResult.to_dict()
    target: dict | None = None  # the guide's target for this scenario: met or not, never a gate
    component_reports: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profile_trace: str | None = None
    # Telemetry and physics.
    telemetry: dict | None = None
    telemetry_samples: list[dict] = field(default_factory=list)
    energy_per_image_j: float | None = None
    flags: list[str] = field(default_factory=list)
    flops_per_step: dict | None = None
    transformer_tflops: float | None = None
    pct_bf16_peak: float | None = None
    pct_fp8_peak: float | None = None
    speedup_vs_bf16: float | None = None

    @property
    def scenario_id(self) -> str:
        return self.scenario["id"]

    @property
    def timed(self) -> bool:
        return self.wall_s is not None

    @property
    def median_s(self) -> float:
        return self.wall_s["median"]

    @property
    def step_ms(self) -> float:
        return self.stages_ms["step_median"]

    @property
    def ssim(self) -> float | None:
        fidelity = self.fidelity or {}
        return 1.0 if fidelity.get("verdict") == "updated" else fidelity.get("ssim")  # "updated": the reference

    @property
    def sm_clock_mhz(self) -> float | None:
        return ((self.telemetry or {}).get("sm_clock_mhz") or {}).get("median")

    def to_dict(self, samples: bool = True) -> dict:
        data = dataclasses.asdict(self)
        if not samples:
            data.pop("telemetry_samples")
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "record") -> CaseRecord:
        if not isinstance(data, dict):
            raise ResultsError(f"{where} is a {type(data).__name__}, not a record object")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise ResultsError(f"{where} lacks {', '.join(missing)}")
        record = cls(**{k: v for k, v in data.items() if k in names})
        if record.wall_samples_s and not all(finite_number(x) for x in record.wall_samples_s):
            raise ResultsError(f"{where} ({record.id}): wall_samples_s holds something other than finite numbers")
        if record.wall_s is not None and not finite_number(record.wall_s.get("median")):
            raise ResultsError(f"{where} ({record.id}): wall_s has no finite median")
        return record


@dataclass
class RunResults:
    """One run: the machine it ran on, how it was started, every case, and what could not run."""

    machine: dict
    records: list[CaseRecord]
    started: str | None = None
    command: str | None = None
    environment: list[dict] | None = None
    baseline_updates: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    interrupted: str | None = None  # why the run stopped early, if it did
    schema: int = SCHEMA_VERSION

    @property
    def gpu(self) -> str | None:
        return self.machine.get("gpu_name")

    @property
    def fingerprint(self) -> str | None:
        return (self.machine.get("model") or {}).get("fingerprint")

    def to_dict(self) -> dict:
        return {SCHEMA_KEY: self.schema, "started": self.started, "command": self.command, "machine": self.machine,
                "environment": self.environment, "baseline_updates": self.baseline_updates,
                "interrupted": self.interrupted, "records": [r.to_dict() for r in self.records],
                "skipped": self.skipped}


def write_results(results: RunResults, path: Path) -> Path:
    return write_json(path, results.to_dict())


def read_results(path: str | Path) -> RunResults:
    path = Path(path)
    if path.is_dir():
        candidate = path / "results.json"
        if not candidate.is_file():
            raise ResultsError(f"{path} is a directory without a results.json")
        path = candidate
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path} is not JSON ({error})") from None
    if not isinstance(payload, dict) or "records" not in payload:
        raise ResultsError(f"{path} is not a flux-perf results.json (no 'records')")
    version = payload.get(SCHEMA_KEY)
    if version not in READABLE_VERSIONS:
        raise ResultsError(f"{path}: results schema {version!r}, this flux-perf reads {READABLE_VERSIONS}; "
                           "use the flux-perf version that wrote it")
    if not isinstance(payload["records"], list):
        raise ResultsError(f"{path}: 'records' is not a list")
    records = [CaseRecord.from_dict(r, f"{path} record {i}") for i, r in enumerate(payload["records"])]
    machine = payload.get("machine") if isinstance(payload.get("machine"), dict) else {}
    return RunResults(machine=machine, records=records, started=payload.get("started"),
                      command=payload.get("command"), environment=payload.get("environment"),
                      baseline_updates=payload.get("baseline_updates") or [], skipped=payload.get("skipped") or [],
                      interrupted=payload.get("interrupted"), schema=SCHEMA_VERSION)
