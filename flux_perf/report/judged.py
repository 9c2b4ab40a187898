"""What a run could not judge: one list, read by the summary, by the exit status (6: nothing failed,
something was not judged) and by `flux-perf ab --undecided-from`, which re-measures the cases an
interleaved A/B can decide (latency INCONCLUSIVE or DISTURBED: both sides run on one machine) and
names the rest."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .records import CaseRecord, RunResults

EXIT_NOT_JUDGED = 6  # pytest's own codes end at 5: nothing failed, something was not judged


class Unjudged(Enum):
    LATENCY_INCONCLUSIVE = "latency inconclusive"
    NO_REFERENCE = "no reference"
    DISTURBED = "disturbed"
    FIDELITY_ERROR = "fidelity not judged"
    FIDELITY_GAP = "fidelity judged by the floor alone"
    NOT_RUN = "not run"


# The latency verdicts that judge nothing, and what each is: read here and by the summary's verdict
# column (upper-case), so the table and the "Not judged" list cannot disagree. Keys: gate Verdict
# values (gate.latency is not imported here: numpy, in every pytest run that loads the plugin).
LATENCY_UNJUDGED = {"inconclusive": Unjudged.LATENCY_INCONCLUSIVE, "no-reference": Unjudged.NO_REFERENCE,
                    "disturbed": Unjudged.DISTURBED}


@dataclass(frozen=True)
class NotJudged:
    case_id: str
    stack: str
    scenario: str
    why: Unjudged
    detail: str  # short: why, in a line of the terminal
    failed: bool  # the run already failed this case for it (a missing reference, --flux-strict, ...)
    more: str = ""  # for the summary: the budget it was judged against, what the run could see

    @property
    def resolvable_by_ab(self) -> bool:
        """A latency verdict the reference could not give (undecided, or rounds on a machine unlike the
        reference's): the interleaved A/B against the base, both sides on one machine, can decide it.
        It refuses itself when the GPU is shared (exit 3)."""
        return self.why in (Unjudged.LATENCY_INCONCLUSIVE, Unjudged.DISTURBED)

    def line(self) -> str:
        return f"{self.case_id}: {self.why.value} ({self.detail})"

    def to_json(self) -> dict:
        return {"case": self.case_id, "stack": self.stack, "scenario": self.scenario, "why": self.why.value,
                "detail": self.detail}


def _of_record(record: CaseRecord) -> list[NotJudged]:
    latency, fidelity = record.latency, record.fidelity
    found = []

    def add(why: Unjudged, detail: str, failed: bool, more: str = "") -> None:
        found.append(NotJudged(record.id, record.stack, record.scenario_id, why, detail, failed, more))

    why = LATENCY_UNJUDGED.get(latency.verdict) if latency else None
    if why is Unjudged.LATENCY_INCONCLUSIVE:
        budget, limit = latency.budget, record.detection_limit
        seconds, source = (budget.seconds, budget.source) if budget else (None, None)
        add(Unjudged.LATENCY_INCONCLUSIVE, record.stopped or "undecided", latency.failed,
            f"against {source}" + (f" ({seconds:.3f} s)" if seconds is not None else "")
            + (f"; it could see slow-downs of {limit:+.1%} and more" if limit is not None else ""))
    elif why is Unjudged.NO_REFERENCE:
        add(Unjudged.NO_REFERENCE, str(latency.missing), True)
    elif why is Unjudged.DISTURBED:
        add(Unjudged.DISTURBED, "; ".join(latency.disturbance) or "the GPU or host was shared", latency.failed)
    if fidelity and fidelity.verdict == "error":  # FidelityVerdict.ERROR (gate.fidelity imports torch)
        add(Unjudged.FIDELITY_ERROR, str(fidelity.message), True)
    elif fidelity and fidelity.gap:
        add(Unjudged.FIDELITY_GAP, fidelity.gap, fidelity.failed)
    return found


def not_judged(records: list[CaseRecord], skipped: list[dict] = ()) -> list[NotJudged]:
    """Every case, or part of one, this run did not judge, in run order; cases the machine could
    not run (`skipped`) last."""
    found = [item for record in records for item in _of_record(record)]
    found += [NotJudged(f"{s['stack']}-{s['scenario']}", s["stack"], s["scenario"], Unjudged.NOT_RUN,
                        str(s.get("reason")), False) for s in skipped]
    return found


def not_judged_in(results: RunResults) -> list[NotJudged]:
    return not_judged(results.records, results.skipped)


def pending(items: list[NotJudged]) -> list[NotJudged]:
    """What is left undecided once the run's failures stand: the items of exit 6."""
    return [item for item in items if not item.failed]
