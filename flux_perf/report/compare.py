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
from dataclasses import dataclass, replace

from .judged import EXIT_NOT_JUDGED
from .records import CaseRecord, ResultsError, RunResults, read_results
from ..gate.stats import (FAMILY_ALPHA, Change, RatioInterval, change_of, holm, two_sample_p_slower,
                          two_sample_ratio)
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
    # A base slowed on purpose made an unchanged head read `faster`; the same plant on both cancels out.
    if _plant(base) != _plant(head):
        raise ResultsError(f"cannot compare: the base run was made with {_plant(base) or 'no plant'}, the head run "
                           f"with {_plant(head) or 'no plant'}: test-only plants change the latency, not the code; "
                           "compare runs made without one, or both with the same")


def _plant(run: RunResults) -> str:
    """What the run's cases were made with to prove the gate (--flux-inject-slowdown, --flux-plant)."""
    said = set()
    for record in run.records:
        if record.injected_slowdown:
            said.add(f"an injected slow-down of {record.injected_slowdown * 100:g}% (--flux-inject-slowdown)")
        if record.planted:
            said.add(f"the planted components {record.planted} (--flux-plant)")
    return " and ".join(sorted(said))


def check_tolerance(tolerance: float) -> float:
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise ResultsError(f"tolerance {tolerance!r}: must be a fraction in [0, 1), e.g. 0.03 for 3 %")
    return tolerance


@dataclass(frozen=True)
class ComparedCase:
    """One case of two runs: its change (a gate.stats Change value, or LOST, UNMEASURED_IN_BASE,
    DISTURBED, "new in head"), why, and, for a case measured in both, the medians and the ratio."""

    id: str
    change: str
    detail: str = ""
    base_median_s: float | None = None
    head_median_s: float | None = None
    ratio: RatioInterval | None = None
    p_slower: float | None = None

    @property
    def compared(self) -> bool:
        return self.ratio is not None


def compare_runs(base: RunResults, head: RunResults, tolerance: float) -> list[ComparedCase]:
    check_comparable(base, head)
    check_tolerance(tolerance)
    base_cases = {r.id: r for r in base.records}
    head_cases = {r.id: r for r in head.records}
    rows = [_compare_case(case, base_cases.get(case), head_cases.get(case), tolerance)
            for case in sorted(set(base_cases) | set(head_cases))]
    return _holm(rows)


def _compare_case(case: str, old: CaseRecord | None, new: CaseRecord | None, tolerance: float) -> ComparedCase:
    if old is None or not old.wall_samples_s:
        return ComparedCase(case, "new in head" if old is None else UNMEASURED_IN_BASE)
    if new is None:
        return ComparedCase(case, LOST, "missing from the head run")
    if new.error or not new.wall_samples_s:
        return ComparedCase(case, LOST, new.error or "no timed rounds")
    ratio = two_sample_ratio(old.wall_samples_s, new.wall_samples_s)
    row = ComparedCase(case, change_of(ratio, tolerance).value, "", statistics.median(old.wall_samples_s),
                       statistics.median(new.wall_samples_s), ratio,
                       two_sample_p_slower(old.wall_samples_s, new.wall_samples_s, 1 + tolerance))
    return _not_judged_if_disturbed(row, {side: why for side, why in (("base", _disturbance(old)),
                                                                      ("head", _disturbance(new))) if why})


def _disturbance(record: CaseRecord) -> str | None:
    """Why the record's rounds may run slow for the machine, not the code: the run's own `disturbed`
    verdict, or a disturbing flag of its rounds (another process, throttling, host contention)."""
    if record.latency and record.latency.verdict == DISTURBED:
        return "; ".join(record.latency.disturbance) or "the GPU or host was shared"
    return ", ".join(flag for flag in record.flags if flag in {str(f) for f in DISTURBING}) or None


def _not_judged_if_disturbed(row: ComparedCase, said: dict[str, str]) -> ComparedCase:
    """A disturbed base judged as clean read a 5 % slow-down `faster`, exit 0."""
    if not any(row.change not in _STANDS[side] for side in said):
        return row
    why = "; ".join(f"{side}'s rounds were disturbed ({why})" for side, why in said.items())
    return replace(row, change=DISTURBED, detail=f"{why}: not judged, compare runs of a quiet machine")


def _holm(rows: list[ComparedCase]) -> list[ComparedCase]:
    """A case slower by its own interval stays `slower` only if Holm rejects it over every compared
    case (a disturbed case too: its p-value was computed and counts in the family)."""
    compared = [row for row in rows if row.compared]
    rejected = dict(zip((row.id for row in compared), holm([row.p_slower for row in compared], FAMILY_ALPHA)))
    return [replace(row, change=Change.INCONCLUSIVE.value,
                    detail=f"slower at 95 % alone, not after Holm's correction over {len(compared)} cases")
            if row.change == Change.SLOWER.value and not rejected.get(row.id, True) else row for row in rows]


def compare_files(base_path, head_path, tolerance: float) -> list[ComparedCase]:
    return compare_runs(read_results(base_path), read_results(head_path), tolerance)


def format_rows(rows: list[ComparedCase], tolerance: float) -> str:
    lines = [f"{'case':<34} {'base s':>8} {'head s':>8} {'change':>8}  95% interval of ratio   verdict (tolerance {tolerance:.0%})"]
    for row in rows:
        if not row.compared:
            detail = f": {row.detail}" if row.detail else ""
            lines.append(f"{row.id:<34} {'':>8} {'':>8} {'':>8}  {'':<16}  {row.change}{detail}")
            continue
        detail = f" ({row.detail})" if row.detail else ""
        lines.append(
            f"{row.id:<34} {row.base_median_s:>8.3f} {row.head_median_s:>8.3f} {row.ratio.ratio - 1:>+8.1%}"
            f"  {row.ratio.low:.3f}-{row.ratio.high:.3f}      {row.change}{detail}"
        )
    return "\n".join(lines)


def verdict_of_comparison(rows: list[ComparedCase]) -> tuple[int, str]:
    """The exit status and why: 1 for a real regression or a case the head lost, 6 (never 0) for a
    case not decided, not judged, or no case compared at all."""
    def named(change: str) -> str:
        return ", ".join(row.id for row in rows if row.change == change)

    if any(row.change in (Change.SLOWER.value, LOST) for row in rows):
        return 1, "regression: a case is slower beyond the tolerance with confidence, or the head lost it"
    not_judged = [(Change.INCONCLUSIVE.value, "not decided: {}: more rounds in both runs decide it"),
                  (DISTURBED, "not judged: {}: disturbed rounds; compare runs of a quiet machine"),
                  (UNMEASURED_IN_BASE, "not judged: {}: the base run did not measure it (an error, or no timed "
                                       "rounds); measure the base again")]
    for change, message in not_judged:
        if named(change):
            return EXIT_NOT_JUDGED, message.format(named(change))
    if not any(row.compared for row in rows):  # e.g. a base with no case against a full head
        counts = Counter(row.change for row in rows)
        why = ("no case was measured in both runs (" + ", ".join(f"{n} {c}" for c, n in counts.items()) + ")"
               if rows else "neither run holds a measured case (no records, or every case skipped)")
        return EXIT_NOT_JUDGED, f"nothing compared: {why}"
    return 0, ""
