"""Formatting shared by the run's summary (summary.py) and the tables merged from several runs
(tables.py): numbers, speed-ups over bf16 eager, the table of skipped cases. Neither of those
imports the other."""

from __future__ import annotations

import math

from ..components.stacks import BASELINE
from .records import CaseRecord


def fmt(value, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def speedups(records: list[CaseRecord]) -> dict[int, float]:
    """id(record) -> its speed-up over bf16 eager of the same GPU, weights and scenario (the first
    bf16 record of several runs)."""
    reference: dict = {}
    for r in records:
        if r.stack == BASELINE and r.timed:
            reference.setdefault((r.gpu, r.fingerprint, r.scenario_id), r)
    out = {}
    for r in records:
        base = reference.get((r.gpu, r.fingerprint, r.scenario_id))
        if base is not None and r.timed:
            out[id(r)] = base.median_s / r.median_s
    return out


def skipped_table(skipped: list[dict]) -> str:
    """Markdown of skipped cases; a `run` column when they come from several results files."""
    columns = ["scenario", "stack", "components", "reason"] + (["run"] if any("run" in s for s in skipped) else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(s.get(c, "-")) for c in columns) + " |" for s in skipped]
    return "\n".join(lines) + "\n"
