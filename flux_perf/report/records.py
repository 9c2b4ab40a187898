"""The results of a run as typed records: one `CaseRecord` per (stack, scenario), one
`RunResults` per run, read and written here only (results.json). A record's rounds (a Summary),
verdicts (verdicts.py) and target are typed objects too: dicts only in the file.

Readers refuse a schema they do not know, with the version they found and the ones they read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..instrument.rounds import Summary
from ..store.files import write_json
from .validate import ResultsError, duplicate_problem, record_problem, run_problem
from .verdicts import FidelityRecord, LatencyRecord, read_fields

if TYPE_CHECKING:
    from ..gate.latency import Target

SCHEMA_VERSION = 3
# Version 1 files (written before the records were typed) and version 2 (before one-sided latency
# verdicts with detection limits) hold the same keys; nothing newer is required of a record, so
# they read as version 3 with the new fields empty.
READABLE_VERSIONS = (1, 2, 3)
SCHEMA_KEY = "flux_perf_results"


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
    wall_s: Summary | None = None  # of the end-to-end rounds
    wall_samples_s: list[float] = field(default_factory=list)
    stages_ms: dict | None = None  # medians: encode, denoise, decode, total_device, step_median
    rounds_detail: list[dict] = field(default_factory=list)
    deterministic: bool | None = None
    peak_memory_gib: float | None = None
    host_cpu_stall: float | None = None  # share of the timed rounds tasks waited for a CPU (Linux PSI)
    host_cpu_steal: float | None = None  # share of the rounds' CPU time the hypervisor took (/proc/stat)
    host_thread_busy: float | None = None  # share of the rounds the kernel-launching thread ran on a CPU
    host_thread_switches: float | None = None  # times a round that thread gave its CPU up
    stopped: str | None = None  # why the rounds stopped where they did (decided, the round cap, the time cap)
    looks: int | None = None  # how many times the verdict could be taken (the error is shared among them)
    linear_precision: str = "bf16"  # of the stack's linear layers: which matmul ceiling applies
    # Verdicts.
    latency: LatencyRecord | None = None
    fidelity: FidelityRecord | None = None
    target: Target | None = None  # the guide's target for this scenario: met or not, never a gate
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

    @property
    def scenario_id(self) -> str:
        return self.scenario["id"]

    @property
    def timed(self) -> bool:
        return self.wall_s is not None

    @property
    def median_s(self) -> float:
        return self.wall_s.median

    @property
    def step_ms(self) -> float | None:
        # stages_ms is optional in a valid results.json: a record without it has no step time
        return (self.stages_ms or {}).get("step_median")

    @property
    def ssim(self) -> float | None:
        if self.fidelity is None:
            return None
        return 1.0 if self.fidelity.verdict == "updated" else self.fidelity.ssim  # "updated": the reference

    @property
    def sm_clock_mhz(self) -> float | None:
        return ((self.telemetry or {}).get("sm_clock_mhz") or {}).get("median")

    @property
    def detection_limit(self) -> float | None:
        return self.latency.detection_limit if self.latency else None

    @property
    def pct_peak(self) -> float | None:
        """Of the ceiling of the stack's linear layers' precision."""
        return self.pct_fp8_peak if self.linear_precision == "fp8" else self.pct_bf16_peak

    def failures(self, unjudged: bool = True) -> list[str]:
        """What the run failed this case for ("latency fail", "error (...)"); with `unjudged`, also
        what it failed without judging (a missing reference, a fidelity error, --flux-strict)."""
        parts = [f"{name} {part.verdict}" for name, part in (("latency", self.latency), ("fidelity", self.fidelity))
                 if part is not None and (part.failed if unjudged else part.verdict == "fail")]
        return parts + ([f"error ({' '.join(self.error.split())[:160]})"] if self.error else [])

    def to_dict(self, samples: bool = True) -> dict:
        data = dataclasses.asdict(dataclasses.replace(self, **dict.fromkeys(_TYPED)))
        for name in _TYPED:  # each as its own to_dict writes it (asdict would drop a Summary's iqr)
            value = getattr(self, name)
            data[name] = None if value is None else value.to_dict()
        if not samples:
            data.pop("telemetry_samples")
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "record") -> CaseRecord:
        """A record as read from a file: every key of the type flux-perf writes, timings that make
        sense (validate.py), else a ResultsError naming the file, the record and the key."""
        problem = record_problem(data, where, _FIELDS)
        if problem:
            raise ResultsError(problem)
        values = {k: v for k, v in data.items() if k in _FIELDS}
        where = f"{where} ({data['id']})"  # a string: record_problem checked it
        for name in _TYPED:
            if values.get(name) is not None:
                values[name] = _read_typed(name, values[name], where)
        if "linear_precision" not in data:  # records before schema 3 named no precision: read it off the stack
            values["linear_precision"] = _linear_precision(str(data.get("stack_key", "")))
        return cls(**values)


# Each key of a record: (its annotation, whether a file must hold it).
_FIELDS = {f.name: (str(f.type), f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
           for f in dataclasses.fields(CaseRecord)}
# The typed keys of a record: a dict in the file only.
_TYPED = ("wall_s", "latency", "fidelity", "target")


def _read_typed(name: str, data, where: str):
    """The object a file holds at a typed key, as its typed value (else a ResultsError naming the key)."""
    # numpy: not when this module is imported (the plugin does, in every pytest run)
    from ..gate.latency import Target

    if name in ("latency", "fidelity"):
        return (LatencyRecord if name == "latency" else FidelityRecord).from_dict(data, where, name)
    cls = Summary if name == "wall_s" else Target
    return cls(**read_fields(cls, data, where, name))


def _linear_precision(stack_key: str) -> str:
    from ..components import ComponentError
    from ..components.stacks import StackError, parse_stack

    try:
        return parse_stack(stack_key).linear_precision
    except (StackError, ComponentError):
        return "bf16"  # a stack (or an option of one) this flux-perf no longer accepts


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
    unrecorded: str | None = None  # nothing was recorded for this GPU model and weights: what to run
    not_selected: list[str] = field(default_factory=list)  # cases -k/-m/--deselect/--lf left out: not judged
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
                "interrupted": self.interrupted, "unrecorded": self.unrecorded, "not_selected": self.not_selected,
                "records": [r.to_dict() for r in self.records], "skipped": self.skipped}


def write_results(results: RunResults, path: Path) -> Path:
    return write_json(path, results.to_dict())


def read_results(path: str | Path) -> RunResults:
    """A results.json (or the folder holding one), checked whole before anything trusts it."""
    path = Path(path)
    try:
        if path.is_dir():
            if not (path / "results.json").is_file():
                raise ResultsError(f"{path} is a directory without a results.json")
            path = path / "results.json"
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path} is not JSON ({error})") from None
    except OSError as error:
        from ..store.folders import shown

        raise ResultsError(f"{shown(path)}: cannot be read ({error.strerror or error})") from None
    return _results_of(payload, path)


def _results_of(payload, path: Path) -> RunResults:
    if not isinstance(payload, dict) or "records" not in payload:
        other = [k for k in payload if str(k).startswith("flux_perf_")] if isinstance(payload, dict) else []
        what = f"a {other[0]} file" if other else "no 'records'"
        raise ResultsError(f"{path} is not a flux-perf results.json ({what}); pass the results.json of a run")
    version = payload.get(SCHEMA_KEY)
    if version not in READABLE_VERSIONS:
        raise ResultsError(f"{path}: results schema {version!r}, this flux-perf reads {READABLE_VERSIONS}; "
                           "use the flux-perf version that wrote it")
    if not isinstance(payload["records"], list):
        raise ResultsError(f"{path}: key 'records' is {type(payload['records']).__name__}, expected a list")
    problem = run_problem(payload, path)
    if problem:
        raise ResultsError(problem)
    records = [CaseRecord.from_dict(r, f"{path}: record {i}") for i, r in enumerate(payload["records"])]
    problem = duplicate_problem([r.id for r in records], path)
    if problem:
        raise ResultsError(problem)
    return RunResults(machine=payload["machine"], records=records, started=payload.get("started"),
                      command=payload.get("command"), environment=payload.get("environment"),
                      baseline_updates=payload.get("baseline_updates") or [], skipped=payload.get("skipped") or [],
                      interrupted=payload.get("interrupted"), unrecorded=payload.get("unrecorded"),
                      not_selected=payload.get("not_selected") or [], schema=SCHEMA_VERSION)


def case_record(case_id: str, stack, scenario, machine, config, measured, *, latency=None, fidelity=None,
                target=None, error: str | None = None, profile_trace: str | None = None) -> CaseRecord:
    """The record of one case, from what was measured and judged (derived figures computed here)."""
    from ..instrument import distributed

    record = CaseRecord(
        id=case_id, stack=stack.name, stack_key=stack.key, components=stack.describe(), lossless=stack.lossless,
        scenario=scenario.to_dict(), model=machine.source.label, fingerprint=machine.fingerprint,
        gpu=machine.gpu_name, device=config.device, injected_slowdown=config.inject_slowdown, planted=config.plant,
        world_size=distributed.world_size(), error=error, target=target,
        # As a file would give them back: the record holds what it writes.
        latency=LatencyRecord.from_dict(latency.to_dict()) if latency else None,
        fidelity=FidelityRecord.from_dict(fidelity.to_dict()) if fidelity else None,
        profile_trace=profile_trace, linear_precision=stack.linear_precision, looks=config.measure.looks)
    return record if measured is None else _with_measurements(record, measured, machine)


def _with_measurements(record: CaseRecord, measured, machine) -> CaseRecord:
    timed, wall = measured.timed, measured.timed.wall
    denoise_s = timed.stage_summary("denoise").median
    achieved = measured.effective.steps * measured.flops_per_step["total"] / denoise_s / 1e12
    peaks = machine.peaks
    telemetry = timed.telemetry
    return dataclasses.replace(
        record, effective_scenario=measured.effective.to_dict(), build_s=measured.build_s, apply_s=measured.apply_s,
        encode_prompt_s=measured.encode_prompt_s, lossless=measured.lossless, first_call_s=timed.first_call_s,
        compile_s=timed.compile_s, warmup_wall_s=timed.warmup_wall_s, rounds=wall.n, attempts=timed.attempts,
        wall_s=wall, wall_samples_s=[r.wall_ms / 1000.0 for r in timed.rounds],
        stages_ms={"encode": timed.stage_summary("encode").median * 1000, "denoise": denoise_s * 1000,
                   "decode": timed.stage_summary("decode").median * 1000,
                   "total_device": timed.stage_summary("total").median * 1000, "step_median": timed.median_step_ms},
        rounds_detail=[r.to_dict() for r in timed.rounds], deterministic=timed.deterministic,
        peak_memory_gib=timed.peak_memory_gib, component_reports=measured.components, notes=timed.notes,
        host_cpu_stall=timed.host_stall, host_cpu_steal=timed.host_steal, stopped=timed.stopped,
        host_thread_busy=timed.thread_busy, host_thread_switches=timed.thread_switches,
        telemetry=telemetry.summary() if telemetry else None,
        telemetry_samples=[s.__dict__ for s in telemetry.samples] if telemetry else [],
        energy_per_image_j=telemetry.energy_per_image_j(wall.n) if telemetry else None,
        flags=[flag.value for flag in timed.flags], flops_per_step=measured.flops_per_step,
        transformer_tflops=achieved,
        pct_bf16_peak=100 * achieved / peaks.bf16_tflops if peaks and peaks.bf16_tflops else None,
        pct_fp8_peak=100 * achieved / peaks.fp8_tflops if peaks and peaks.fp8_tflops else None)
