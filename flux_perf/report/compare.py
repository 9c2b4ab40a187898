"""Compare two runs' results.json: per case, the change with a statistical verdict.

Runs of different GPUs or weights are refused: their latencies say nothing about the code.
A case the head lost (missing, or errored where the base measured it) is a regression.
Rounds the machine slowed (the run's `disturbed`, a disturbing flag) judge nothing about the code,
except where the disturbance could not have made the verdict (a head slower than a slowed base).
`slower` also needs Holm's correction over the compared cases (family-wise 2.5 %, as the A/B's),
so a run of 16 cases is not 16 chances at a false alarm.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter

from .records import CaseRecord, ResultsError, RunResults, read_results
from ..gate.stats import FAMILY_ALPHA, Change, change_of, holm, two_sample_p_slower, two_sample_ratio
from ..instrument.telemetry import DISTURBING

LOST = "lost in head"
UNMEASURED_IN_BASE = "not measured in base"  # the base errored there: not judged, exit 6
DISTURBED = "disturbed"  # not judged: exit 6, as the suite's DISTURBED
# A verdict a disturbance could not have made: a slowed base only hides a slow-down, a slowed head
# only invents one.
_STANDS = {"base": (Change.SLOWER.value,), "head": (Change.FASTER.value, Change.SAME.value, Change.NOT_SLOWER.value)}


def check_comparable(base: RunResults, head: RunResults) -> None:
    for what, a, b in (("GPU", base.gpu, head.gpu), ("model weights", base.fingerprint, head.fingerprint)):
        if a != b:
            raise ResultsError(f"cannot compare runs of different {what}: base {a!r}, head {b!r}")


def check_tolerance(tolerance: float) -> float:
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise ResultsError(f"tolerance {tolerance!r}: must be a fraction in [0, 1), e.g. 0.03 for 3 %")
    return tolerance


def compare_runs(base: RunResults, head: RunResults, tolerance: float) -> list[dict]:
    check_comparable(base, head)
    check_tolerance(tolerance)
    base_cases = {r.id: r for r in base.records}
    head_cases = {r.id: r for r in head.records}
    rows = []
    for case in sorted(set(base_cases) | set(head_cases)):
        old, new = base_cases.get(case), head_cases.get(case)
        if old is None or not old.wall_samples_s:
            rows.append({"id": case, "change": "new in head" if old is None else UNMEASURED_IN_BASE})
        elif new is None:
            rows.append({"id": case, "change": LOST, "detail": "missing from the head run"})
        elif new.error or not new.wall_samples_s:
            rows.append({"id": case, "change": LOST, "detail": new.error or "no timed rounds"})
        else:
            ratio = two_sample_ratio(old.wall_samples_s, new.wall_samples_s)
            rows.append({"id": case, "base_median_s": statistics.median(old.wall_samples_s),
                         "head_median_s": statistics.median(new.wall_samples_s), "ratio": ratio.ratio,
                         "ratio_low": ratio.low, "ratio_high": ratio.high,
                         "change": change_of(ratio, tolerance).value,
                         "p_slower": two_sample_p_slower(old.wall_samples_s, new.wall_samples_s, 1 + tolerance),
                         "disturbed": {side: why for side, why in (("base", _disturbance(old)), ("head", _disturbance(new)))
                                       if why}})
    return [_not_judged_if_disturbed(row) for row in _holm(rows)]


def _disturbance(record: CaseRecord) -> str | None:
    """Why the record's rounds may run slow for the machine, not the code: the run's own `disturbed`
    verdict, or a disturbing flag of its rounds (another process, throttling, host contention)."""
    if record.latency and record.latency.verdict == DISTURBED:
        return "; ".join(record.latency.disturbance) or "the GPU or host was shared"
    return ", ".join(flag for flag in record.flags if flag in {str(f) for f in DISTURBING}) or None


def _not_judged_if_disturbed(row: dict) -> dict:
    """A disturbed base judged as clean read a 5 % slow-down `faster`, exit 0."""
    said = row.pop("disturbed", None) or {}
    if any(row["change"] not in _STANDS[side] for side in said):
        row["change"] = DISTURBED
        row["detail"] = "; ".join(f"{side}'s rounds were disturbed ({why})" for side, why in said.items()) \
            + ": not judged, compare runs of a quiet machine"
    return row


def _holm(rows: list[dict]) -> list[dict]:
    """A case slower by its own interval stays `slower` only if Holm rejects it over every compared case."""
    compared = [row for row in rows if "ratio" in row]
    for row, rejected in zip(compared, holm([row["p_slower"] for row in compared], FAMILY_ALPHA)):
        if row["change"] == Change.SLOWER.value and not rejected:
            row["change"] = Change.INCONCLUSIVE.value
            row["detail"] = f"slower at 95 % alone, not after Holm's correction over {len(compared)} cases"
    return rows


def compare_files(base_path, head_path, tolerance: float) -> list[dict]:
    return compare_runs(read_results(base_path), read_results(head_path), tolerance)


def format_rows(rows: list[dict], tolerance: float) -> str:
    lines = [f"{'case':<34} {'base s':>8} {'head s':>8} {'change':>8}  95% interval of ratio   verdict (tolerance {tolerance:.0%})"]
    for row in rows:
        if "ratio" not in row:
            detail = f": {row['detail']}" if row.get("detail") else ""
            lines.append(f"{row['id']:<34} {'':>8} {'':>8} {'':>8}  {'':<16}  {row['change']}{detail}")
            continue
        detail = f" ({row['detail']})" if row.get("detail") else ""
        lines.append(
            f"{row['id']:<34} {row['base_median_s']:>8.3f} {row['head_median_s']:>8.3f} {row['ratio'] - 1:>+8.1%}"
            f"  {row['ratio_low']:.3f}-{row['ratio_high']:.3f}      {row['change']}{detail}"
        )
    return "\n".join(lines)


def has_regression(rows: list[dict]) -> bool:
    return any(row.get("change") in (Change.SLOWER.value, LOST) for row in rows)


def nothing_compared(rows: list[dict]) -> str | None:
    """Why no case was measured in both runs (no verdict at all: never a pass), or None when one was."""
    if any("ratio" in row for row in rows):
        return None
    if not rows:
        return "neither run holds a measured case (no records, or every case skipped)"
    counts = Counter(row["change"] for row in rows)
    return "no case was measured in both runs (" + ", ".join(f"{n} {change}" for change, n in counts.items()) + ")"
