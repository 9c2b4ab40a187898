"""Reports of a run: results.json (every figure), summary.md (one table, the targets, what
could not run), PNG plots; and the component tables merged from several runs."""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from pathlib import Path

from .records import CaseRecord, RunResults, read_results, write_results
from .stacks import BASELINE

FP8_TAG = "fp8"
PLOTS = ("latency.png", "telemetry.png")


def _fmt(value, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def _bf16_reference(records: list[CaseRecord]) -> dict[tuple, CaseRecord]:
    """(gpu, weights, scenario) -> the bf16 eager record (the first one of several runs):
    a speed-up is only ever against bf16 on the same GPU and weights."""
    reference: dict = {}
    for r in records:
        if r.stack == BASELINE and r.timed:
            reference.setdefault((r.gpu, r.fingerprint, r.scenario_id), r)
    return reference


def add_speedups(records: list[CaseRecord]) -> None:
    reference = _bf16_reference(records)
    for record in records:
        base = reference.get((record.gpu, record.fingerprint, record.scenario_id))
        record.speedup_vs_bf16 = base.median_s / record.median_s if base and record.timed else None


def verdict_text(record: CaseRecord) -> str:
    if record.error:
        return "ERROR"
    latency = record.latency or {}
    verdict = latency.get("verdict", "-")
    return verdict.upper() if latency.get("failed") or verdict == "disturbed" else verdict


def _ssim_text(record: CaseRecord) -> str:
    fidelity = record.fidelity or {}
    verdict = fidelity.get("verdict")
    if verdict == "fail":
        return f"**{_fmt(fidelity.get('ssim'), '.4f')} FAIL**"
    if verdict == "error":
        return "no baseline" if "no baseline" in (fidelity.get("message") or "") else "error"
    if verdict == "updated":
        return "updated"
    # A pass whose output changed (within the lossless band or the stack's tolerance) is marked.
    return _fmt(fidelity.get("ssim"), ".4f") + (" (changed)" if fidelity.get("changed") else "")


def _flags(record: CaseRecord) -> list[str]:
    flags = list(record.flags)
    if record.deterministic is False:
        flags.append("nondeterministic")
    if record.injected_slowdown:
        flags.append(f"injected slowdown {record.injected_slowdown:g}")
    stale = (record.latency or {}).get("stale") or []
    if stale:
        flags.append("stale reference: " + "; ".join(stale))
    return flags


def summary_markdown(results: RunResults) -> str:
    machine = results.machine
    software = machine.get("software") or {}
    model = machine.get("model") or {}
    peaks = machine.get("matmul_peaks") or {}
    lines = [
        "# flux-perf summary",
        "",
        f"GPU: **{machine.get('gpu_name') or 'CPU'}** · model: `{model.get('source')}` ({model.get('fingerprint')}) · "
        f"torch {software.get('torch')} · diffusers {software.get('diffusers')} · "
        f"commit `{(machine.get('commit') or 'unknown')[:12]}`",
    ]
    if results.interrupted:
        lines += ["", f"**Run interrupted**: {results.interrupted}. The cases below are those that finished."]
    if peaks.get("bf16_tflops"):
        lines.append(f"Measured matmul ceilings: bf16 {peaks['bf16_tflops']} TFLOP/s, fp8 {peaks['fp8_tflops']} TFLOP/s.")
    lines += [
        "",
        "| scenario | stack | median s (95% CI) | budget s | verdict | vs bf16 | SSIM | J/image | SM MHz "
        "| TFLOP/s (% peak) | compile s | flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.records:
        if r.error:
            lines.append(f"| {r.scenario_id} | {r.stack} | - | - | ERROR | - | - | - | - | - | - | {r.error[:80]} |")
            continue
        if not r.timed:
            continue
        wall = r.wall_s
        budget = (r.latency or {}).get("budget") or {}
        peak = r.pct_fp8_peak if FP8_TAG in r.stack_key else r.pct_bf16_peak
        lines.append(
            f"| {r.scenario_id} | {r.stack} | {wall['median']:.3f} ({wall['ci_low']:.3f}-{wall['ci_high']:.3f}) "
            f"| {_fmt(budget.get('seconds'), '.3f')} | {verdict_text(r)} | {_fmt(r.speedup_vs_bf16, '.2f')}x "
            f"| {_ssim_text(r)} | {_fmt(r.energy_per_image_j, '.0f')} | {_fmt(r.sm_clock_mhz, '.0f')} "
            f"| {_fmt(r.transformer_tflops, '.0f')} ({_fmt(peak, '.0f')}%) | {_fmt(r.compile_s, '.1f')} "
            f"| {', '.join(_flags(r)) or '-'} |"
        )
    lines += ["", "Latency: end-to-end wall time of one edit (reference encode + denoising + decode), median of the "
              "timed rounds with its distribution-free interval. The gate is no regression against the stack's own "
              "recorded reference on this GPU model, plus the absolute budgets of budgets.toml; `inconclusive`: the "
              "interval straddles the budget; `DISTURBED`: slow on a machine unlike the reference's (see the test's "
              "error for the process or clock), re-run it. TFLOP/s: transformer FLOPs / denoising time, % of the "
              "measured matmul ceiling (fp8 for FP8 stacks)."]
    disturbed = [r for r in results.records if (r.latency or {}).get("disturbance")]
    if disturbed:
        lines += ["", "## Disturbed (not judged)", ""]
        lines += [f"- {r.id}: {'; '.join(r.latency['disturbance'])}" for r in disturbed]
    judged = [r for r in results.records if (r.fidelity or {}).get("verdict") in ("pass", "fail")]
    if judged:
        lines += ["", "## Fidelity against the bf16 baseline", "",
                  "| scenario | stack | SSIM | PSNR dB | latent distance | verdict | why / note |", "|---|---|---|---|---|---|---|"]
        for r in judged:
            f = r.fidelity
            why = "; ".join(f.get("reasons") or []) or f.get("message") or "-"
            lines.append(f"| {r.scenario_id} | {r.stack} | {_fmt(f.get('ssim'), '.5f')} | "
                         f"{_fmt(f.get('psnr'), '.2f') if f.get('psnr') is not None else 'identical'} | "
                         f"{_fmt(f.get('latent_rel_l2'), '.2e')} | {f['verdict']} | {why} |")
    targets = [r for r in results.records if r.target]
    if targets:
        lines += ["", "## Targets (the guide's table; reported, not a gate)", "",
                  "| scenario | stack | target s | median s | met | gap s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.scenario_id} | {r.stack} | {r.target['seconds']:.2f} | {r.median_s:.3f} "
                  f"| {'yes' if r.target['met'] else 'no'} | {r.target['gap_s']:+.3f} |" for r in targets]
    if results.skipped:
        lines += ["", "## Not run on this machine", "", skipped_table(results.skipped).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot_latency(records: list[CaseRecord], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r.timed]
    if not rows:
        return None
    scenarios = list(dict.fromkeys(r.scenario_id for r in rows))
    stacks = list(dict.fromkeys(r.stack for r in rows))
    width = 0.8 / len(stacks)
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(scenarios) * max(1, len(stacks) / 2)), 4.2),
                                constrained_layout=True)
    colours = plt.get_cmap("tab10")
    by_case = {(r.stack, r.scenario_id): r for r in rows}
    for j, stack in enumerate(stacks):
        for i, scenario in enumerate(scenarios):
            r = by_case.get((stack, scenario))
            if r is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            wall = r.wall_s
            failed = (r.latency or {}).get("failed")
            axis.bar(x, wall["median"], width * 0.9, color=colours(j), label=stack if i == 0 else None,
                     edgecolor="red" if failed else "none", linewidth=2)
            axis.errorbar(x, wall["median"], yerr=[[wall["median"] - wall["ci_low"]], [wall["ci_high"] - wall["median"]]],
                          color="black", capsize=2, linewidth=1)
            budget = ((r.latency or {}).get("budget") or {}).get("seconds")
            if budget:
                axis.hlines(budget, x - width / 2, x + width / 2, colors="black", linestyles="--", linewidth=1.5)
            if r.target:
                axis.plot(x, r.target["seconds"], marker="v", color="green", markersize=6)
    axis.set_xticks(range(len(scenarios)), scenarios)
    axis.set_ylabel("end-to-end latency (s)")
    axis.set_title("Latency per scenario and stack (bars: median, whiskers: 95% CI, dashes: budget, "
                   "green: target)", fontsize=9)
    axis.legend(fontsize=8, ncols=min(4, len(stacks)))
    axis.grid(axis="y", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_telemetry(records: list[CaseRecord], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r.telemetry_samples]
    if not rows:
        return None
    figure, axes = plt.subplots(3, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True)
    offset = 0.0
    for r in rows:
        samples = r.telemetry_samples
        t = [offset + s["t_s"] for s in samples]
        for axis, name, colour in ((axes[0], "power_w", "tab:red"), (axes[1], "sm_clock_mhz", "tab:blue"),
                                   (axes[2], "temperature_c", "tab:orange")):
            axis.plot(t, [s[name] if s[name] is not None else math.nan for s in samples], color=colour, linewidth=1)
        for axis in axes:
            axis.axvline(offset, color="grey", linewidth=0.5)
        axes[0].annotate(r.id, (offset, 1.0), xycoords=("data", "axes fraction"), fontsize=6, rotation=30,
                         va="bottom")
        offset = t[-1] if t else offset
    axes[0].set_ylabel("power (W)")
    axes[1].set_ylabel("SM clock (MHz)")
    axes[2].set_ylabel("temperature (C)")
    axes[2].set_xlabel("timed seconds, tests back to back")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def write_report(results: RunResults, folder: Path, plots: bool = True, log=lambda _: None) -> dict:
    """Write results.json first (the measurements), then summary.md and, unless `plots` is False,
    the plots; return the paths. A plot that cannot be drawn is logged, never fatal; a plot not
    drawn now is removed, so no picture of an older run sits beside these results."""
    folder = Path(folder)
    add_speedups(results.records)
    written = {"results": write_results(results, folder / "results.json")}
    written["summary"] = folder / "summary.md"
    written["summary"].write_text(summary_markdown(results))
    for name, plotter in (("latency", plot_latency), ("telemetry", plot_telemetry)):
        path = folder / f"{name}.png"
        path.unlink(missing_ok=True)
        if not plots:
            continue
        try:
            if plotter(results.records, path):
                written[f"{name}_plot"] = path
        except Exception as error:  # noqa: BLE001 - a picture must never cost the measurements
            log(f"could not draw {path}: {''.join(traceback.format_exception_only(error)).strip()}")
    return written


# -- tables merged from several runs --------------------------------------------------
@dataclass(frozen=True)
class Run:
    name: str  # the file's folder or stem, to tell runs apart in a table
    results: RunResults


def load_runs(paths) -> list[Run]:
    runs = []
    for path in paths:
        path = Path(path)
        name = path.parent.name if path.name == "results.json" else (path.name if path.is_dir() else path.stem)
        runs.append(Run(name, read_results(path)))
    return runs


def skipped_table(skipped: list[dict]) -> str:
    """Markdown of skipped cases; a `run` column when they come from several results files."""
    columns = ["scenario", "stack", "components", "reason"] + (["run"] if any("run" in s for s in skipped) else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(s.get(c, "-")) for c in columns) + " |" for s in skipped]
    return "\n".join(lines) + "\n"


def _rows(runs: list[Run], keep) -> list[tuple[Run, CaseRecord]]:
    # A case that raised keeps whatever rounds it timed before, but its numbers are not a result.
    rows = [(run, r) for run in runs for r in run.results.records
            if r.timed and not r.error and keep(r.stack, r.scenario_id)]
    add_speedups([r for _, r in rows])
    return sorted(rows, key=lambda row: (row[1].gpu or "", row[1].fingerprint, row[1].scenario_id, row[1].median_s))


def failed_cases(runs: list[Run], keep=lambda stack, scenario: True) -> list[dict]:
    """Cases that raised, in the shape of the skipped list (their error as the reason)."""
    return [{"scenario": r.scenario_id, "stack": r.stack, "components": r.components,
             "reason": "failed: " + " ".join(r.error.split())[:160], "run": run.name}
            for run in runs for r in run.results.records if r.error and keep(r.stack, r.scenario_id)]


def _machine_label(record: CaseRecord) -> str:
    return f"{record.gpu or 'CPU'} / {record.fingerprint}"


def component_rows(runs: list[Run], keep=lambda stack, scenario: True) -> list[dict]:
    """Per stack and scenario: latency, per-step time, speed-up over bf16 eager of the same GPU
    and weights, compile time, peak memory, SSIM against the bf16 baseline."""
    return [{
        "machine": _machine_label(r), "scenario": r.scenario_id, "stack": r.stack, "components": r.components,
        "latency_s": r.median_s, "ci_low_s": r.wall_s["ci_low"], "ci_high_s": r.wall_s["ci_high"],
        "step_ms": r.step_ms, "speedup_vs_bf16": r.speedup_vs_bf16, "compile_s": r.compile_s,
        "peak_memory_gib": r.peak_memory_gib, "ssim_vs_bf16": r.ssim, "run": run.name,
    } for run, r in _rows(runs, keep)]


def component_table(runs: list[Run], keep=lambda stack, scenario: True) -> str:
    rows = component_rows(runs, keep)
    mixed = len({row["machine"] for row in rows}) > 1
    head = "| machine " if mixed else ""
    lines = [f"{head}| scenario | stack | components | latency s (95% CI) | step ms | vs bf16 eager | compile s "
             "| peak GiB | SSIM vs bf16 | run |", "|---" * (10 + mixed) + "|"]
    for row in rows:
        lines.append(
            (f"| {row['machine']} " if mixed else "")
            + f"| {row['scenario']} | {row['stack']} | {row['components']} | {row['latency_s']:.3f} "
            f"({row['ci_low_s']:.3f}-{row['ci_high_s']:.3f}) | {row['step_ms']:.1f} | "
            f"{_fmt(row['speedup_vs_bf16'], '.2f')}x | {_fmt(row['compile_s'], '.1f')} "
            f"| {_fmt(row['peak_memory_gib'], '.1f')} | {_fmt(row['ssim_vs_bf16'], '.4f')} | {row['run']} |"
        )
    return "\n".join(lines) + "\n"


def physics_table(runs: list[Run], keep=lambda stack, scenario: True) -> str:
    """Per stack and scenario: latency, SSIM, achieved transformer TFLOP/s, and how close each
    step came to its floor: linear FLOPs at the fp8 ceiling (FP8 stacks) or the bf16 one,
    attention FLOPs at the bf16 ceiling, using the best ceilings measured on that GPU."""
    ceilings: dict = {}
    for run in runs:
        peaks = run.results.machine.get("matmul_peaks") or {}
        best = ceilings.setdefault(run.results.gpu, [None, None])
        for i, name in enumerate(("bf16_tflops", "fp8_tflops")):
            if peaks.get(name):
                best[i] = max(best[i] or 0, peaks[name])
    lines = ["Ceilings (best measured per GPU, 8192^3 matmul, sustained): "
             + "; ".join(f"{gpu or 'CPU'}: bf16 {b} TFLOP/s, fp8 {f} TFLOP/s" for gpu, (b, f) in ceilings.items()), "",
             "| scenario | stack | latency s | step ms | floor ms/step | % of floor | transformer TFLOP/s "
             "| % bf16 ceiling | SSIM vs bf16 | run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run, r in _rows(runs, keep):
        bf16_peak, fp8_peak = ceilings.get(r.gpu, (None, None))
        flops, tflops = r.flops_per_step or {}, r.transformer_tflops
        floor_ms = None
        if flops and bf16_peak:
            linear_peak = fp8_peak if FP8_TAG in r.stack_key and fp8_peak else bf16_peak
            floor_ms = (flops["linear"] / linear_peak + flops["attention"] / bf16_peak) / 1e9
        lines.append(
            f"| {r.scenario_id} | {r.stack} | {r.median_s:.3f} | {r.step_ms:.1f} | {_fmt(floor_ms, '.1f')} "
            f"| {_fmt(100 * floor_ms / r.step_ms if floor_ms else None, '.0f')} | {_fmt(tflops, '.0f')} "
            f"| {_fmt(100 * tflops / bf16_peak if tflops and bf16_peak else None, '.0f')} | {_fmt(r.ssim, '.4f')} "
            f"| {run.name} |"
        )
    return "\n".join(lines) + "\n"
