"""A case's verdicts as results.json holds them (records.py's CaseRecord.latency and .fidelity):
typed and frozen in memory, a dict only at the file's boundary (from_dict, to_dict).

A record is made from its judge's own dict (gate/latency.py, gate/fidelity.py) and read back from a
file of any readable schema: a key an older flux-perf did not write takes its default, the value
its readers always saw there. Not the judges' own classes: a file cannot give those back (a
relative budget's recorded rounds are written as their count, verdicts of schemas 1-2 hold a
budget but no checks, and their `no-budget` is no verdict the judge gives any more). So verdicts
stay the strings written: compare them with gate's Verdict and FidelityVerdict, str enums.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .validate import ResultsError, fields_problem

if TYPE_CHECKING:
    from ..gate.stats import RatioInterval, Serial
    from ..store.entries import Band


def read_fields(cls, data, where: str, key: str) -> dict:
    """The fields of dataclass `cls` that the object `data` (at `key` of a record) holds, checked;
    lists of tuple fields as tuples."""
    problem = fields_problem(data, where, key, cls)
    if problem:
        raise ResultsError(problem)
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    return {k: tuple(v) if fields[k].startswith("tuple[") else v for k, v in data.items() if k in fields}


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return copy.deepcopy(value)  # a string, a number, None, or the dict of `recorded`


class _FileRecord:
    """A typed record written as JSON holds it: its fields in their order (the order its judge writes)."""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class BudgetRecord(_FileRecord):
    """A latency budget as judged (gate/budgets.py's LatencyBudget.to_dict())."""

    seconds: float
    kind: str  # "absolute" (budgets.toml) or "relative" (the recorded median x (1 + tolerance))
    source: str
    tolerance: float | None = None
    recorded_rounds: int = 0  # the reference's rounds: the judge compares them, the file counts them
    stale: tuple[str, ...] = ()
    reference_s: float | None = None

    @classmethod
    def from_dict(cls, data, where: str = "record", key: str = "budget") -> BudgetRecord:
        return cls(**read_fields(cls, data, where, key))


@dataclass(frozen=True)
class CheckRecord(_FileRecord):
    """This run's median against one budget (gate/latency.py's BudgetCheck.to_dict())."""

    budget: BudgetRecord
    verdict: str
    low_s: float
    high_s: float
    fails_from_s: float
    ratio: RatioInterval | None = None
    serial: Serial | None = None  # files before the widening for serial correlation hold none

    @classmethod
    def from_dict(cls, data, where: str = "record", key: str = "check") -> CheckRecord:
        # numpy: not when this module is imported (the plugin does, in every pytest run)
        from ..gate.stats import RatioInterval, Serial

        values = read_fields(cls, data, where, key)
        values["budget"] = BudgetRecord.from_dict(values["budget"], where, f"{key}.budget")
        for name, kind in (("ratio", RatioInterval), ("serial", Serial)):
            if values.get(name) is not None:
                values[name] = kind(**read_fields(kind, values[name], where, f"{key}.{name}"))
        return cls(**values)

    def to_dict(self) -> dict:
        data = super().to_dict()
        if data["serial"] is None:  # a file written before the widening: written back as it was
            del data["serial"]
        return data


@dataclass(frozen=True)
class LatencyRecord(_FileRecord):
    """A case's latency verdict (gate/latency.py's LatencyResult.to_dict()). Schema 1 wrote the
    fields up to `failed`, schema 2 also `disturbance` and `stale`."""

    verdict: str  # a gate Verdict's value; files of schemas 1-2 also hold "no-budget"
    budget: BudgetRecord | None = None  # the one that decided the verdict
    checks: tuple[CheckRecord, ...] = ()  # one per budget
    strict: bool = False
    failed: bool = False
    disturbance: tuple[str, ...] = ()
    missing: str | None = None
    stale: tuple[str, ...] = ()
    reference_s: float | None = None
    faster_by: float | None = None
    median_s: float | None = None
    fails_from_s: float | None = None
    detection_limit: float | None = None

    @classmethod
    def from_dict(cls, data, where: str = "record", key: str = "latency") -> LatencyRecord:
        values = read_fields(cls, data, where, key)
        if values.get("budget") is not None:
            values["budget"] = BudgetRecord.from_dict(values["budget"], where, f"{key}.budget")
        values["checks"] = tuple(CheckRecord.from_dict(check, where, f"{key}.checks.{i}")
                                 for i, check in enumerate(values.get("checks", ())))
        return cls(**values)


@dataclass(frozen=True)
class FidelityRecord(_FileRecord):
    """A case's fidelity verdict (gate/fidelity.py's FidelityResult.to_dict()). Schema 1 wrote
    neither `latent_rel_l2`, `reasons`, `changed`, `own_latent_moved` nor `recorded`, schemas 1-2
    none of `gap`, `strict`, `band` and `failed` (schema 2's `calibration`, which no reader used,
    is not read)."""

    verdict: str  # a FidelityVerdict's value
    ssim: float | None = None
    psnr: float | None = None  # None: identical images
    latent_rel_l2: float | None = None
    floor: float | None = None
    floor_source: str | None = None
    baseline: str | None = None
    evidence: str | None = None
    message: str | None = None
    stale: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    changed: bool | None = None
    own_latent_moved: float | None = None
    gap: str | None = None
    strict: bool = False
    # The store's entry as written (FidelityEntry.to_json(); schema 2 wrote an older form of it):
    # kept whole for the file, no reader looks into it.
    recorded: dict | None = None
    band: Band | None = None
    failed: bool = False

    @classmethod
    def from_dict(cls, data, where: str = "record", key: str = "fidelity") -> FidelityRecord:
        values = read_fields(cls, data, where, key)
        if values.get("band") is not None:
            # torch (store.provenance): not when this module is imported
            from ..store.entries import Band

            values["band"] = Band(**read_fields(Band, values["band"], where, f"{key}.band"))
        return cls(**values)
