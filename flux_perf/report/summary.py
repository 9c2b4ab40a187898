"""A run's report: results.json (every figure), summary.md (the table of every case with what it
could see, what could not be judged and why, the fidelity gaps, the targets, what could not run)
and the plots. Nothing here changes the records it is given."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Collection
from pathlib import Path

from ..gate.fidelity import FidelityVerdict
from ..gate.latency import Verdict
from ..store.files import atomic_write
from ..store.folders import os_reason
from .format import fmt, skipped_table, speedups
from .judged import LATENCY_UNJUDGED, NotJudged, Unjudged, not_judged
from .plots import plot_latency, plot_telemetry
from .records import CaseRecord, RunResults, write_results


class ReportError(RuntimeError):
    """The report could not be written (disk full, a folder turned read-only): one line naming the
    folder and the OS error, so the caller can still print the summary and exit non-zero."""


def report_error(folder: Path, error: OSError) -> ReportError:
    return ReportError(f"could not write the report in {folder}: {os_reason(error)}; free space there or choose "
                       "another folder (--report-dir / --flux-report-dir)")


def verdict_text(record: CaseRecord) -> str:
    if record.error:
        return "ERROR"
    latency = record.latency
    if latency is None:
        return "-"
    if latency.verdict == Verdict.PASS and latency.faster_by:
        return f"pass, faster {latency.faster_by:.1%}"
    return latency.verdict.upper() if latency.failed or latency.verdict in LATENCY_UNJUDGED else latency.verdict


def _ssim_text(record: CaseRecord) -> str:
    fidelity = record.fidelity
    if fidelity is None:
        return fmt(None, ".4f")
    if fidelity.verdict == FidelityVerdict.FAIL:
        return f"**{fmt(fidelity.ssim, '.4f')} FAIL**"
    if fidelity.verdict == FidelityVerdict.ERROR:
        return "**no baseline**" if "no bf16 baseline" in (fidelity.message or "") else "**error**"
    if fidelity.verdict == FidelityVerdict.UPDATED:
        return "updated"
    gap = " (floor only)" if fidelity.gap else ""
    # A pass whose output changed (within the lossless band or the stack's tolerance) is marked.
    return fmt(fidelity.ssim, ".4f") + (" (changed)" if fidelity.changed else "") + gap


def _stale(record: CaseRecord) -> list[str]:
    """Why the case's references may no longer hold, each reason once."""
    reasons = [*(record.latency.stale if record.latency else ()), *(record.fidelity.stale if record.fidelity else ())]
    return list(dict.fromkeys(reasons))


def _flags(record: CaseRecord) -> list[str]:
    flags = list(record.flags)
    if record.deterministic is False:
        flags.append("nondeterministic")
    if record.injected_slowdown:
        flags.append(f"injected slowdown {record.injected_slowdown:g}")
    if _stale(record):
        flags.append("stale reference")
    return flags


def _header(results: RunResults) -> list[str]:
    machine = results.machine
    software, model = machine.get("software") or {}, machine.get("model") or {}
    peaks = machine.get("matmul_peaks") or {}
    lines = ["# flux-perf summary", "",
             f"GPU: **{machine.get('gpu_name') or 'CPU'}** · model: `{model.get('source')}` ({model.get('fingerprint')}) · "
             f"torch {software.get('torch')} · diffusers {software.get('diffusers')} · "
             f"commit `{(machine.get('commit') or 'unknown')[:20]}`"]
    if results.unrecorded:
        lines += ["", f"**Nothing recorded for this GPU model and weights**: {results.unrecorded}"]
    if results.not_selected:
        lines += ["", f"**Not selected**: {not_selected_text(results.not_selected)}"]
    if results.interrupted:
        lines += ["", f"**Run interrupted**: {results.interrupted}. The cases below are those that finished."]
    if peaks.get("bf16_tflops"):
        lines.append(f"Measured matmul ceilings: bf16 {peaks['bf16_tflops']} TFLOP/s, fp8 {peaks['fp8_tflops']} TFLOP/s.")
    return lines


def not_selected_text(cases: list[str], shown: int = 8) -> str:
    """The cases a run's -k/-m/--deselect/--lf left out, named: neither measured nor judged, so the
    run's verdict says nothing about them."""
    names = ", ".join(cases[:shown]) + (f" and {len(cases) - shown} more" if len(cases) > shown else "")
    return (f"{len(cases)} case(s) this run's options name were left out by -k, -m, --deselect or --lf, "
            f"neither measured nor judged: {names}")


def tokens_text(r: CaseRecord) -> str:
    """Tokens of one transformer step: image + reference + text (records before these keys: image+text)."""
    flops = r.flops_per_step or {}
    if "latent_tokens" in flops:
        return f"{flops['latent_tokens']}+{flops['reference_tokens']}+{flops['text_tokens']}"
    if "image_tokens" in flops:
        return f"{flops['image_tokens']}+{flops['text_tokens']}"
    return "-"


def _case_row(r: CaseRecord, speedup: float | None) -> str:
    if r.error:
        return f"| {r.scenario_id} | {r.stack} | - | - | - | - | ERROR | - | - | - | - | - | - | {r.error[:80]} |"
    wall, budget = r.wall_s, r.latency.budget if r.latency else None
    return (f"| {r.scenario_id} | {r.stack} | {tokens_text(r)} | {wall.median:.3f} ({wall.ci_low:.3f}-{wall.ci_high:.3f}) "
            f"| {fmt(budget.seconds if budget else None, '.3f')} | {fmt(r.detection_limit, '+.1%')} | {verdict_text(r)} "
            f"| {fmt(speedup, '.2f')}x | {_ssim_text(r)} | {fmt(r.energy_per_image_j, '.0f')} "
            f"| {fmt(r.sm_clock_mhz, '.0f')} | {fmt(r.transformer_tflops, '.0f')} ({fmt(r.pct_peak, '.0f')}%) "
            f"| {fmt(r.compile_s, '.1f')} | {', '.join(_flags(r)) or '-'} |")


_UNJUDGED_WORDS = [verdict.upper() for verdict in LATENCY_UNJUDGED]  # as the verdict column writes them
LEGEND = ("Latency: end-to-end wall time of one edit (reference encode + denoising + decode), median of the timed "
          "rounds with its distribution-free interval. The gate is one-sided: no slow-down beyond the tolerance "
          "against the stack's own recorded reference on this GPU model (exact Mann-Whitney interval of the ratio, "
          "widened for serially correlated rounds), "
          "and the absolute budgets of budgets.toml; faster always passes. `detects`: the smallest slow-down against "
          "the reference this run would have called a failure at its measured noise and rounds (not a promise: a case "
          "that slow is caught at the first look 11-51 % of the time). "
          f"{', '.join(_UNJUDGED_WORDS[:-1])} and {_UNJUDGED_WORDS[-1]} cases were not judged: see below. "
          "tokens: one transformer step's "
          "image + reference image + text tokens. TFLOP/s: transformer FLOPs / "
          "denoising time, % of the measured matmul ceiling of the stack's linear precision.")


# The verdict column's own words (upper-case), so a case reads the same in the table and the list.
_NOT_JUDGED_LABELS = {**{why: verdict.upper() for verdict, why in LATENCY_UNJUDGED.items()},
                      Unjudged.FIDELITY_ERROR: "fidelity not judged"}


def _listed(items: list[NotJudged], omit: set, whys: Collection[Unjudged]) -> list[NotJudged]:
    return [item for item in items if item.why in whys and (item.stack, item.scenario, item.why) not in omit]


def _not_judged(items: list[NotJudged], omit: set) -> list[str]:
    lines = [f"- {item.case_id}: {_NOT_JUDGED_LABELS[item.why]}: {item.detail}" + (f"; {item.more}" if item.more else "")
             for item in _listed(items, omit, _NOT_JUDGED_LABELS)]
    return ["", "## Not judged (never a pass)", "", *lines] if lines else []


def _gaps_and_stale(records: list[CaseRecord], items: list[NotJudged], omit: set) -> list[str]:
    lines = []
    # judged.py's items, the list the exit status reads: the summary cannot name other gaps than it.
    gaps = [f"- {item.case_id}: {item.detail}" for item in _listed(items, omit, (Unjudged.FIDELITY_GAP,))]
    if gaps:
        lines += ["", "## Fidelity gaps (judged by the floor alone; --flux-strict fails them)", "", *gaps]
    stale = [f"- {r.id}: " + "; ".join(_stale(r)) for r in records if _stale(r)]
    if stale:
        lines += ["", "## Stale references (still gating; re-record them on purpose)", "", *stale]
    return lines


def _fidelity_table(records: list[CaseRecord]) -> list[str]:
    shown = (FidelityVerdict.PASS, FidelityVerdict.FAIL, FidelityVerdict.GAP)
    judged = [r for r in records if r.fidelity and r.fidelity.verdict in shown]
    if not judged:
        return []
    lines = ["", "## Fidelity against the bf16 baseline", "",
             "| scenario | stack | SSIM | PSNR dB | latent distance | verdict | why / note |", "|---|---|---|---|---|---|---|"]
    for r in judged:
        f = r.fidelity
        why = "; ".join(f.reasons) or f.message or "-"
        psnr = fmt(f.psnr, ".2f") if f.psnr is not None else "identical"
        lines.append(f"| {r.scenario_id} | {r.stack} | {fmt(f.ssim, '.5f')} | {psnr} | "
                     f"{fmt(f.latent_rel_l2, '.2e')} | {f.verdict} | {why} |")
    return lines


def summary_markdown(results: RunResults, listed_below: Collection[NotJudged] = ()) -> str:
    """The summary; `listed_below`: not-judged items the caller prints after it (pytest's exit-6
    list), left out here so that the terminal names each once. summary.md leaves out nothing."""
    omit = {(item.stack, item.scenario, item.why) for item in listed_below}
    speedup = speedups(results.records)
    lines = _header(results) + [
        "", "| scenario | stack | tokens | median s (95% CI) | budget s | detects | verdict | vs bf16 | SSIM | J/image "
        "| SM MHz | TFLOP/s (% peak) | compile s | flags |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_case_row(r, speedup.get(id(r))) for r in results.records if r.error or r.timed]
    lines += ["", LEGEND]
    items = not_judged(results.records)
    lines += _not_judged(items, omit) + _gaps_and_stale(results.records, items, omit)
    lines += _fidelity_table(results.records)
    targets = [r for r in results.records if r.target]
    if targets:
        lines += ["", "## Targets (the guide's table; reported, not a gate)", "",
                  "| scenario | stack | target s | median s | met | gap s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.scenario_id} | {r.stack} | {r.target.seconds:.2f} | {r.median_s:.3f} "
                  f"| {'yes' if r.target.met else 'no'} | {r.target.gap_s:+.3f} |" for r in targets]
    skipped = [s for s in results.skipped if (s["stack"], s["scenario"], Unjudged.NOT_RUN) not in omit]
    if skipped:
        lines += ["", "## Not run on this machine", "", skipped_table(skipped).rstrip("\n")]
    return "\n".join(lines) + "\n"


def summary_instead(results: RunResults, error: ReportError,
                    listed_below: Collection[NotJudged] = ()) -> tuple[str, str]:
    """A report that could not be written: the summary to print in its place, and the one line
    after it naming the folder and the OS error (pytest's terminal and `flux-perf run` alike)."""
    return summary_markdown(results, listed_below), f"{error}; the summary above is all that is left of this run"


def write_report(results: RunResults, folder: Path, plots: bool = True, log=lambda _: None) -> dict:
    """Write results.json first (the measurements), then summary.md and, unless `plots` is False,
    the plots; return the paths. A plot that cannot be drawn is logged, never fatal; a plot not
    drawn now is removed, so no picture of an older run sits beside these results. A file that
    cannot be written raises ReportError (the older file, if any, is left whole)."""
    folder = Path(folder)
    try:
        written = {"results": write_results(results, folder / "results.json")}
        written["summary"] = atomic_write(folder / "summary.md", summary_markdown(results).encode())
    except OSError as error:
        raise report_error(folder, error) from None
    for name, plotter in (("latency", plot_latency), ("telemetry", plot_telemetry)):
        path = folder / f"{name}.png"
        with contextlib.suppress(OSError):  # an older picture that cannot go is at worst stale
            path.unlink(missing_ok=True)
        if not plots:
            continue
        try:
            if plotter(results.records, path):
                written[f"{name}_plot"] = path
        except Exception as error:  # noqa: BLE001 - a picture must never cost the measurements
            log(f"could not draw {path}: {''.join(traceback.format_exception_only(error)).strip()}")
    return written
