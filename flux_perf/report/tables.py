"""Tables merged from several runs' results.json (`flux-perf table`): per component, and against
the physical floor of a step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .format import fmt, speedups
from .records import CaseRecord, RunResults, read_results
from .summary import verdict_text


@dataclass(frozen=True)
class Run:
    name: str  # the file's folder or stem, to tell runs apart in a table
    results: RunResults


def load_runs(paths) -> list[Run]:
    runs = []
    for path in paths:
        path = Path(path)
        results = read_results(path)  # first: it names a path it cannot read
        name = path.parent.name if path.name == "results.json" else (path.name if path.is_dir() else path.stem)
        runs.append(Run(name, results))
    return runs


def _rows(runs: list[Run], keep) -> list[tuple[Run, CaseRecord, float | None]]:
    """(run, record, speed-up over bf16 eager of the same GPU, weights and scenario), timed cases only."""
    # A case that raised keeps whatever rounds it timed before, but its numbers are not a result.
    rows = [(run, r) for run in runs for r in run.results.records
            if r.timed and not r.error and keep(r.stack, r.scenario_id)]
    speedup = speedups([r for _, r in rows])
    rows = [(run, r, speedup.get(id(r))) for run, r in rows]
    return sorted(rows, key=lambda row: (row[1].gpu or "", row[1].fingerprint, row[1].scenario_id, row[1].median_s))


def failed_cases(runs: list[Run], keep=lambda stack, scenario: True) -> list[dict]:
    """Cases that raised, in the shape of the skipped list (their error as the reason)."""
    return [{"scenario": r.scenario_id, "stack": r.stack, "components": r.components,
             "reason": "failed: " + " ".join(r.error.split())[:160], "run": run.name}
            for run in runs for r in run.results.records if r.error and keep(r.stack, r.scenario_id)]


def _machine_label(record: CaseRecord) -> str:
    return f"{record.gpu or 'CPU'} / {record.fingerprint}"


def component_rows(runs: list[Run], keep=lambda stack, scenario: True) -> list[dict]:
    """Per stack and scenario: latency and the gate's verdict on it (a number the run could not
    judge says so beside it), per-step time, speed-up over bf16 eager of the same GPU and weights,
    compile time, peak memory, SSIM against the bf16 baseline."""
    return [{
        "machine": _machine_label(r), "scenario": r.scenario_id, "stack": r.stack, "components": r.components,
        "latency_s": r.median_s, "ci_low_s": r.wall_s.ci_low, "ci_high_s": r.wall_s.ci_high, "gate": verdict_text(r),
        "step_ms": r.step_ms, "speedup_vs_bf16": speedup, "compile_s": r.compile_s,
        "peak_memory_gib": r.peak_memory_gib, "ssim_vs_bf16": r.ssim, "run": run.name,
    } for run, r, speedup in _rows(runs, keep)]


def component_table(runs: list[Run], keep=lambda stack, scenario: True) -> str:
    rows = component_rows(runs, keep)
    mixed = len({row["machine"] for row in rows}) > 1
    head = "| machine " if mixed else ""
    lines = [f"{head}| scenario | stack | components | latency s (95% CI) | gate | step ms | vs bf16 eager "
             "| compile s | peak GiB | SSIM vs bf16 | run |", "|---" * (11 + mixed) + "|"]
    for row in rows:
        lines.append(
            (f"| {row['machine']} " if mixed else "")
            + f"| {row['scenario']} | {row['stack']} | {row['components']} | {row['latency_s']:.3f} "
            f"({row['ci_low_s']:.3f}-{row['ci_high_s']:.3f}) | {row['gate']} | {fmt(row['step_ms'], '.1f')} | "
            f"{fmt(row['speedup_vs_bf16'], '.2f')}x | {fmt(row['compile_s'], '.1f')} "
            f"| {fmt(row['peak_memory_gib'], '.1f')} | {fmt(row['ssim_vs_bf16'], '.4f')} | {row['run']} |"
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
    for run, r, _ in _rows(runs, keep):
        bf16_peak, fp8_peak = ceilings.get(r.gpu, (None, None))
        flops, tflops = r.flops_per_step or {}, r.transformer_tflops
        floor_ms = None
        if flops and bf16_peak:
            linear_peak = fp8_peak if r.linear_precision == "fp8" and fp8_peak else bf16_peak
            floor_ms = (flops["linear"] / linear_peak + flops["attention"] / bf16_peak) / 1e9
        lines.append(
            f"| {r.scenario_id} | {r.stack} | {r.median_s:.3f} | {fmt(r.step_ms, '.1f')} | {fmt(floor_ms, '.1f')} "
            f"| {fmt(100 * floor_ms / r.step_ms if floor_ms and r.step_ms else None, '.0f')} | {fmt(tflops, '.0f')} "
            f"| {fmt(100 * tflops / bf16_peak if tflops and bf16_peak else None, '.0f')} | {fmt(r.ssim, '.4f')} "
            f"| {run.name} |"
        )
    return "\n".join(lines) + "\n"
