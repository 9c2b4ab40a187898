"""summary.md names what a run did not judge from report/judged.py, the one list the exit status
and `ab --undecided-from` read: the summary's sections cannot drift from it."""

from helpers import make_results

from flux_perf.report.judged import LATENCY_UNJUDGED, Unjudged, not_judged
from flux_perf.report.records import read_results
from flux_perf.report.summary import summary_markdown, verdict_text
from flux_perf.report.verdicts import BudgetRecord, FidelityRecord, LatencyRecord

GAP = "no fidelity calibration for 512x512@6 on this GPU and weights: judged against the floor alone"


def _section(summary: str, title: str) -> list[str]:
    """The '- ' lines under the heading that starts with `title`."""
    after = summary.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]
    return [line for line in after.splitlines() if line.startswith("- ")]


def test_the_fidelity_gaps_are_judged_pys_gaps(tmp_path):
    cases = {"fp8-512x512@6": FidelityRecord("pass", gap=GAP),
             "fast-512x512@6": FidelityRecord("fail", gap=GAP, failed=True, reasons=("SSIM 0.9 < 0.95",)),
             # A broken judgement is not a gap, whatever the record also holds (an edited or older file).
             "bf16-512x512@6": FidelityRecord("error", gap=GAP, message="calibration.json: broken", failed=True)}
    results = read_results(make_results(tmp_path / "results.json", {case: [0.4] * 8 for case in cases}))
    for record in results.records:
        record.latency, record.fidelity = LatencyRecord("pass"), cases[record.id]
    items = not_judged(results.records)
    summary = summary_markdown(results)
    gaps = _section(summary, "Fidelity gaps")
    assert gaps == [f"- {i.case_id}: {i.detail}" for i in items if i.why is Unjudged.FIDELITY_GAP]
    assert gaps == [f"- fp8-512x512@6: {GAP}", f"- fast-512x512@6: {GAP}"]
    assert _section(summary, "Not judged") == ["- bf16-512x512@6: fidelity not judged: calibration.json: broken"]
    # A gap pytest lists after the summary (exit 6) is named there only.
    listed = [i for i in items if i.case_id == "fp8-512x512@6"]
    assert _section(summary_markdown(results, listed), "Fidelity gaps") == [f"- fast-512x512@6: {GAP}"]


def test_a_latency_verdict_judged_py_does_not_judge_is_upper_case_and_listed(tmp_path):
    """One definition (judged.LATENCY_UNJUDGED) both for the verdict column and the "Not judged"
    list: each such verdict, even one the run did not fail, is shown upper-case and listed."""
    unjudged = sorted(LATENCY_UNJUDGED)
    assert unjudged == ["disturbed", "inconclusive", "no-reference"]
    stacks = ("fp8", "fast", "bf16")
    cases = {f"{stack}-512x512@6": verdict for stack, verdict in zip(stacks, unjudged)} | {"cache-512x512@6": "pass"}
    results = read_results(make_results(tmp_path / "results.json", {case: [0.4] * 8 for case in cases}))
    for record in results.records:
        record.latency = LatencyRecord(cases[record.id], BudgetRecord(0.4, "relative", "recorded"))
    summary = summary_markdown(results)
    rows = {line.split(" | ")[1]: line.split(" | ")[6] for line in summary.splitlines() if line.startswith("| 512x512@6 |")}
    assert rows == {"fp8": "DISTURBED", "fast": "INCONCLUSIVE", "bf16": "NO-REFERENCE", "cache": "pass"}
    assert [verdict_text(r) for r in results.records] == [v.upper() for v in unjudged] + ["pass"]
    listed = [line.split(":")[0][2:] for line in _section(summary, "Not judged")]
    assert listed == [case for case, verdict in cases.items() if verdict in LATENCY_UNJUDGED]
    assert [i.why for i in not_judged(results.records)] == [LATENCY_UNJUDGED[v] for v in unjudged]
