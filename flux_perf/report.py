"""Reports of a run: results.json (every figure), summary.md (one table), PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .compare import read_results
from .distributed import world_size
from .stacks import BASELINE

FP8_TAG = "fp8"


def case_record(session, result) -> dict:
    """Everything measured for one (stack, scenario), JSON-serialisable."""
    record = {
        "id": result.id,
        "stack": result.stack.name,
        "stack_key": result.stack.key,
        "components": result.stack.describe(),
        "lossless": result.stack.lossless,
        "scenario": result.scenario.to_dict(),
        "effective_scenario": result.effective.to_dict() if result.effective else None,
        "model": session.source.label,
        "fingerprint": session.source.fingerprint(),
        "gpu": session.gpu_name,
        "device": session.config.device,
        "injected_slowdown": session.config.inject_slowdown,
        "world_size": world_size(),
        "error": result.error,
        "build_s": result.build_s,
        "apply_s": result.apply_s,
    }
    timed = result.timed
    if timed is None:
        return record
    wall = timed.wall
    denoise_s = timed.stage_summary("denoise").median
    steps = result.effective.steps
    record.update({
        "first_call_s": timed.first_call_s,
        "compile_s": timed.compile_s,
        "warmup_wall_s": timed.warmup_wall_s,
        "rounds": wall.n,
        "attempts": timed.attempts,
        "wall_s": wall.to_dict(),
        "wall_samples_s": [r.wall_ms / 1000.0 for r in timed.rounds],
        "stages_ms": {
            "encode": timed.stage_summary("encode").median * 1000,
            "denoise": denoise_s * 1000,
            "decode": timed.stage_summary("decode").median * 1000,
            "total_device": timed.stage_summary("total").median * 1000,
            "step_median": timed.median_step_ms,
        },
        "rounds_detail": [r.to_dict() for r in timed.rounds],
        "deterministic": timed.deterministic,
        "peak_memory_gib": timed.peak_memory_gib,
        "latency": result.latency.to_dict() if result.latency else None,
        "fidelity": result.fidelity.to_dict() if result.fidelity else None,
        "component_reports": result.components,
        "notes": timed.notes,
        "profile_trace": result.profile_trace,
    })
    if timed.telemetry is not None:
        record["telemetry"] = timed.telemetry.summary()
        record["telemetry_samples"] = [s.__dict__ for s in timed.telemetry.samples]
        record["energy_per_image_j"] = timed.telemetry.energy_per_image_j(wall.n)
        record["flags"] = timed.telemetry.flags()
    if result.flops_per_step:
        achieved = steps * result.flops_per_step["total"] / denoise_s / 1e12
        peaks = session.peaks()
        record["flops_per_step"] = result.flops_per_step
        record["transformer_tflops"] = achieved
        record["pct_bf16_peak"] = 100 * achieved / peaks.bf16_tflops if peaks.bf16_tflops else None
        record["pct_fp8_peak"] = 100 * achieved / peaks.fp8_tflops if peaks.fp8_tflops else None
    return record


def add_speedups(records: list[dict]) -> None:
    baseline = {r["scenario"]["id"]: r for r in records if r["stack"] == BASELINE and "wall_s" in r}
    for record in records:
        reference = baseline.get(record["scenario"]["id"])
        if reference and "wall_s" in record:
            record["speedup_vs_bf16"] = reference["wall_s"]["median"] / record["wall_s"]["median"]


def _fmt(value, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def verdict_text(record: dict) -> str:
    if record.get("error"):
        return "ERROR"
    latency = (record.get("latency") or {})
    verdict = latency.get("verdict", "-")
    return verdict.upper() if latency.get("failed") else verdict


def summary_markdown(records: list[dict], machine: dict, skipped: list[dict] = ()) -> str:
    gpu = machine.get("gpu_name") or "CPU"
    peaks = machine.get("matmul_peaks") or {}
    lines = [
        "# flux-perf summary",
        "",
        f"GPU: **{gpu}** · model: `{machine['model']['source']}` ({machine['model']['fingerprint']}) · "
        f"torch {machine['software']['torch']} · diffusers {machine['software'].get('diffusers')} · "
        f"commit `{(machine.get('commit') or 'unknown')[:12]}`",
    ]
    if peaks.get("bf16_tflops"):
        lines.append(f"Measured matmul ceilings: bf16 {peaks['bf16_tflops']} TFLOP/s, fp8 {peaks['fp8_tflops']} TFLOP/s.")
    lines += [
        "",
        "| scenario | stack | median s (95% CI) | budget s | verdict | vs bf16 | SSIM | J/image | SM MHz | TFLOP/s (% peak) | compile s | flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        scenario = r["scenario"]["id"]
        if r.get("error"):
            lines.append(f"| {scenario} | {r['stack']} | - | - | ERROR | - | - | - | - | - | - | {r['error'][:80]} |")
            continue
        if "wall_s" not in r:
            continue
        wall = r["wall_s"]
        budget = ((r.get("latency") or {}).get("budget") or {})
        fidelity = r.get("fidelity") or {}
        ssim = _fmt(fidelity.get("ssim"), ".4f")
        if fidelity.get("verdict") == "fail":
            ssim = f"**{ssim} < {fidelity.get('floor')}**"
        elif fidelity.get("verdict") == "error":
            ssim = "no baseline" if "no baseline" in (fidelity.get("message") or "") else "error"
        elif fidelity.get("verdict") == "updated":
            ssim = "updated"
        peak = r.get("pct_fp8_peak") if FP8_TAG in r["stack_key"] else r.get("pct_bf16_peak")
        sm_clock = ((r.get("telemetry") or {}).get("sm_clock_mhz") or {}).get("median")
        flags = list(r.get("flags") or [])
        if not r.get("deterministic", True):
            flags.append("nondeterministic")
        if r.get("injected_slowdown"):
            flags.append(f"injected slowdown {r['injected_slowdown']:g}")
        lines.append(
            f"| {scenario} | {r['stack']} | {wall['median']:.3f} ({wall['ci_low']:.3f}-{wall['ci_high']:.3f}) "
            f"| {_fmt(budget.get('seconds'), '.3f')} | {verdict_text(r)} | {_fmt(r.get('speedup_vs_bf16'), '.2f')}x "
            f"| {ssim} | {_fmt(r.get('energy_per_image_j'), '.0f')} | {_fmt(sm_clock, '.0f')} "
            f"| {_fmt(r.get('transformer_tflops'), '.0f')} ({_fmt(peak, '.0f')}%) | {_fmt(r.get('compile_s'), '.1f')} "
            f"| {', '.join(flags) or '-'} |"
        )
    lines += ["", "Latency: end-to-end wall time of one edit (reference encode + denoising + decode), median of the "
              "timed rounds with the order-statistic 95% interval; `inconclusive` means the interval straddles the "
              "budget. TFLOP/s: transformer FLOPs / denoising time, % of the measured matmul ceiling "
              "(fp8 for FP8 stacks)."]
    if skipped:
        lines += ["", "## Not run on this machine", "", skipped_table(skipped).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot_latency(records: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if "wall_s" in r]
    if not rows:
        return None
    scenarios = list(dict.fromkeys(r["scenario"]["id"] for r in rows))
    stacks = list(dict.fromkeys(r["stack"] for r in rows))
    width = 0.8 / len(stacks)
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(scenarios) * max(1, len(stacks) / 2)), 4.2),
                                constrained_layout=True)
    colours = plt.get_cmap("tab10")
    for j, stack in enumerate(stacks):
        for i, scenario in enumerate(scenarios):
            match = [r for r in rows if r["stack"] == stack and r["scenario"]["id"] == scenario]
            if not match:
                continue
            r = match[0]
            x = i - 0.4 + width * (j + 0.5)
            wall = r["wall_s"]
            failed = (r.get("latency") or {}).get("failed")
            axis.bar(x, wall["median"], width * 0.9, color=colours(j), label=stack if i == 0 else None,
                     edgecolor="red" if failed else "none", linewidth=2)
            axis.errorbar(x, wall["median"], yerr=[[wall["median"] - wall["ci_low"]], [wall["ci_high"] - wall["median"]]],
                          color="black", capsize=2, linewidth=1)
            budget = ((r.get("latency") or {}).get("budget") or {}).get("seconds")
            if budget:
                axis.hlines(budget, x - width / 2, x + width / 2, colors="black", linestyles="--", linewidth=1.5)
    axis.set_xticks(range(len(scenarios)), scenarios)
    axis.set_ylabel("end-to-end latency (s)")
    axis.set_title("Latency per scenario and stack (bars: median, whiskers: 95% CI, dashes: budget)")
    axis.legend(fontsize=8, ncols=min(4, len(stacks)))
    axis.grid(axis="y", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_telemetry(records: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r.get("telemetry_samples")]
    if not rows:
        return None
    figure, axes = plt.subplots(3, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True)
    offset = 0.0
    for r in rows:
        samples = r["telemetry_samples"]
        t = [offset + s["t_s"] for s in samples]
        for axis, field, colour in ((axes[0], "power_w", "tab:red"), (axes[1], "sm_clock_mhz", "tab:blue"),
                                    (axes[2], "temperature_c", "tab:orange")):
            axis.plot(t, [s[field] if s[field] is not None else math.nan for s in samples], color=colour, linewidth=1)
        for axis in axes:
            axis.axvline(offset, color="grey", linewidth=0.5)
        axes[0].annotate(r["id"], (offset, 1.0), xycoords=("data", "axes fraction"), fontsize=6, rotation=30,
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


def write_report(session, folder: Path, plots: bool = True) -> dict:
    """Write results.json, summary.md and (unless `plots` is False) the plots; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = [case_record(session, result) for result in session.cases.values()]
    add_speedups(records)
    machine = session.machine_info()
    payload = {"flux_perf_results": 1, "started": session.started, "command": session.command, "machine": machine,
               "environment": session.environment_report,
               "baseline_updates": session.baseline_updates, "records": records,
               "skipped": list(session.skipped.values())}
    written = {"results": folder / "results.json", "summary": folder / "summary.md"}
    written["results"].write_text(json.dumps(payload, indent=1, default=str) + "\n")
    written["summary"].write_text(summary_markdown(records, machine, payload["skipped"]))
    for name, plotter in (("latency_plot", plot_latency), ("telemetry_plot", plot_telemetry)) if plots else ():
        path = plotter(records, folder / f"{name.replace('_plot', '')}.png")
        if path:
            written[name] = path
    return written


def load_records(paths) -> list[dict]:
    """Records of several results.json files, each tagged with its file stem and machine ceilings."""
    records = []
    for path in paths:
        payload = read_results(path)
        for record in payload["records"]:
            record = dict(record, run=Path(path).stem, matmul_peaks=payload["machine"].get("matmul_peaks") or {})
            records.append(record)
    return records


def load_skipped(paths) -> list[dict]:
    """The (stack, scenario) pairs several results.json files could not run, each with its file stem."""
    return [dict(entry, run=Path(path).stem) for path in paths for entry in read_results(path).get("skipped", [])]


def skipped_table(skipped: list[dict]) -> str:
    """Markdown of skipped cases; a `run` column when they come from several results files."""
    columns = ["scenario", "stack", "components", "reason"] + (["run"] if any("run" in s for s in skipped) else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(s.get(c, "-")) for c in columns) + " |" for s in skipped]
    return "\n".join(lines) + "\n"


def _bf16_reference(records: list[dict]) -> dict:
    reference: dict = {}
    for r in records:
        if r["stack"] == BASELINE and "wall_s" in r:
            reference.setdefault(r["scenario"]["id"], r)
    return reference


def _ceilings(records: list[dict]) -> tuple[float | None, float | None]:
    """The best matmul ceilings measured in any of the runs."""
    bf16 = [r["matmul_peaks"].get("bf16_tflops") for r in records if r["matmul_peaks"].get("bf16_tflops")]
    fp8 = [r["matmul_peaks"].get("fp8_tflops") for r in records if r["matmul_peaks"].get("fp8_tflops")]
    return (max(bf16) if bf16 else None, max(fp8) if fp8 else None)


def _ssim(record: dict) -> float | None:
    fidelity = record.get("fidelity") or {}
    return 1.0 if fidelity.get("verdict") == "updated" else fidelity.get("ssim")  # "updated": the reference itself


def component_rows(records: list[dict]) -> list[dict]:
    """Per stack and scenario: latency, per-step time, speed-up over bf16 eager, compile time,
    peak memory, SSIM against the bf16 baseline (fastest first within a scenario)."""
    reference = _bf16_reference(records)
    rows = []
    for r in sorted((r for r in records if "wall_s" in r), key=lambda r: (r["scenario"]["id"], r["wall_s"]["median"])):
        scenario, base = r["scenario"]["id"], reference.get(r["scenario"]["id"])
        rows.append({
            "scenario": scenario, "stack": r["stack"], "components": r["components"],
            "latency_s": r["wall_s"]["median"], "ci_low_s": r["wall_s"]["ci_low"], "ci_high_s": r["wall_s"]["ci_high"],
            "step_ms": r["stages_ms"]["step_median"],
            "speedup_vs_bf16": base["wall_s"]["median"] / r["wall_s"]["median"] if base else None,
            "compile_s": r.get("compile_s"), "peak_memory_gib": r.get("peak_memory_gib"),
            "ssim_vs_bf16": _ssim(r), "run": r["run"],
        })
    return rows


def component_table(records: list[dict]) -> str:
    lines = ["| scenario | stack | components | latency s (95% CI) | step ms | vs bf16 eager | compile s "
             "| peak GiB | SSIM vs bf16 | run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in component_rows(records):
        lines.append(
            f"| {row['scenario']} | {row['stack']} | {row['components']} | {row['latency_s']:.3f} ({row['ci_low_s']:.3f}-"
            f"{row['ci_high_s']:.3f}) | {row['step_ms']:.1f} | {_fmt(row['speedup_vs_bf16'], '.2f')}x "
            f"| {_fmt(row['compile_s'], '.1f')} | {_fmt(row['peak_memory_gib'], '.1f')} | {_fmt(row['ssim_vs_bf16'], '.4f')} "
            f"| {row['run']} |"
        )
    return "\n".join(lines) + "\n"


def physics_table(records: list[dict]) -> str:
    """Per stack and scenario: latency, SSIM, achieved transformer TFLOP/s, and how close each
    step came to its floor: linear FLOPs at the fp8 ceiling (FP8 stacks) or the bf16 one,
    attention FLOPs at the bf16 ceiling, using the best ceilings measured across the runs."""
    bf16_peak, fp8_peak = _ceilings(records)
    lines = [f"Ceilings: best measured bf16 {bf16_peak} TFLOP/s, fp8 {fp8_peak} TFLOP/s (8192^3 matmul, sustained).", "",
             "| scenario | stack | latency s | step ms | floor ms/step | % of floor | transformer TFLOP/s "
             "| % bf16 ceiling | SSIM vs bf16 | run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in records if "wall_s" in r), key=lambda r: (r["scenario"]["id"], r["wall_s"]["median"])):
        tflops, flops = r.get("transformer_tflops"), r.get("flops_per_step") or {}
        floor_ms = None
        if flops and bf16_peak:
            linear_peak = fp8_peak if FP8_TAG in r["stack_key"] and fp8_peak else bf16_peak
            floor_ms = (flops["linear"] / linear_peak + flops["attention"] / bf16_peak) / 1e9
        step = r["stages_ms"]["step_median"]
        ssim = _ssim(r)
        lines.append(
            f"| {r['scenario']['id']} | {r['stack']} | {r['wall_s']['median']:.3f} | {step:.1f} | {_fmt(floor_ms, '.1f')} "
            f"| {_fmt(100 * floor_ms / step if floor_ms else None, '.0f')} | {_fmt(tflops, '.0f')} "
            f"| {_fmt(100 * tflops / bf16_peak if tflops and bf16_peak else None, '.0f')} | {_fmt(ssim, '.4f')} "
            f"| {r['run']} |"
        )
    return "\n".join(lines) + "\n"
