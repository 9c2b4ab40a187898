"""The pictures: a run's latency per scenario and stack against its budget and target, the
card's power, SM clock and temperature over the timed rounds, and an A/B's blocks."""

from __future__ import annotations

import math
from pathlib import Path

from .records import CaseRecord


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
            failed = (r.latency and r.latency.failed) or (r.fidelity and r.fidelity.failed)
            axis.bar(x, wall.median, width * 0.9, color=colours(j), label=stack if i == 0 else None,
                     edgecolor="red" if failed else "none", linewidth=2)
            axis.errorbar(x, wall.median, yerr=[[wall.median - wall.ci_low], [wall.ci_high - wall.median]],
                          color="black", capsize=2, linewidth=1)
            budget = r.latency.budget.seconds if r.latency and r.latency.budget else None
            if budget:
                axis.hlines(budget, x - width / 2, x + width / 2, colors="black", linestyles="--", linewidth=1.5)
            if r.target:
                axis.plot(x, r.target.seconds, marker="v", color="green", markersize=6)
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


def plot_ab(data: dict, path: Path) -> Path | None:
    """An `ab --json` file (version 2) as a picture: per case, each block's head/base ratio with its
    95 % interval (and the control's, when planted), the verdict's interval over all pairs, and the
    tolerance band that `same` must fit in and `slower` must clear."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in data.get("cases") or [] if c.get("blocks")]
    if not cases:
        return None
    tolerance = (data.get("settings") or {}).get("tolerance")
    tolerance = 0.01 if tolerance is None else tolerance  # 0 is a tolerance (`ab --tolerance 0`), not absent
    figure, axes = plt.subplots(len(cases), 1, figsize=(7, 2.4 * len(cases)), squeeze=False, constrained_layout=True)
    for axis, case in zip(axes[:, 0], cases):
        blocks = case["blocks"]
        where = range(1, len(blocks) + 1)
        series = [("head/base", "tab:blue", blocks, 0.0)]
        if all(b.get("control") for b in blocks):
            series.append(("control/base", "tab:red", [b["control"] for b in blocks], 0.15))
        for label, colour, shown, shift in series:
            ratios = [b["ratio"] for b in shown]
            axis.errorbar([x + shift for x in where], ratios, fmt="o", color=colour, capsize=2, markersize=3,
                          yerr=[[r - b["ratio_low"] for r, b in zip(ratios, shown)],
                                [b["ratio_high"] - r for r, b in zip(ratios, shown)]], label=label)
        for pooled, colour in ((case.get("pooled"), "tab:blue"), (case.get("control_pooled"), "tab:red")):
            if pooled:
                axis.axhspan(pooled["low"], pooled["high"], color=colour, alpha=0.15)
        axis.axhline(1.0, color="black", linewidth=0.8)
        for edge in (1 - tolerance, 1 + tolerance):
            axis.axhline(edge, color="black", linestyle="--", linewidth=0.8)
        pairs = (case.get("pooled") or {}).get("pairs")
        control = f", control {case['control_pooled']['change']}" if case.get("control_pooled") else ""
        axis.set_title(f"{case['stack']}-{case['scenario']}: {case.get('verdict')}{control} ({pairs} pairs; shaded: "
                       f"all pairs' interval; dashes: 1 +- {tolerance:.0%})", fontsize=8)
        axis.set_xlabel("block", fontsize=8)
        axis.set_ylabel("ratio to base", fontsize=8)
        axis.set_xticks(list(where))
        axis.legend(fontsize=7, loc="upper left")
        axis.grid(axis="y", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def plot_between(entries: list[dict], path: Path, tolerance: float) -> Path | None:
    """`ab-pairs`' A vs A across files as a picture: per case, each file's pooled head/base with its
    95 % interval (red where it leaves out 1: two processes of the same code that differ), and the
    tolerance band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not entries:
        return None
    rows = [len(entry["files"]) for entry in entries]
    figure, axes = plt.subplots(len(entries), 1, figsize=(7, 0.9 + 0.28 * sum(rows) + 0.5 * len(entries)),
                                squeeze=False, constrained_layout=True, gridspec_kw={"height_ratios": rows})
    for axis, entry in zip(axes[:, 0], entries):
        files = entry["files"]
        for y, row in enumerate(files):
            colour = "tab:red" if row["leaves_out_1"] else "tab:blue"
            axis.errorbar([row["ratio"]], [y], xerr=[[row["ratio"] - row["low"]], [row["high"] - row["ratio"]]],
                          fmt="o", color=colour, capsize=2, markersize=3)
        axis.set_yticks(range(len(files)))
        axis.set_yticklabels([f"{Path(row['file']).stem} ({row['pairs']})" for row in files], fontsize=6)
        axis.axvline(1.0, color="black", linewidth=0.8)
        for edge in (1 - tolerance, 1 + tolerance):
            axis.axvline(edge, color="black", linestyle="--", linewidth=0.8)
        axis.set_title(f"{entry['case']}, A vs A: {entry['leaving_out_1']} of {len(files)} files' intervals leave "
                       f"out 1 (red; dashes: 1 +- {tolerance:.0%})", fontsize=8)
        axis.set_xlabel("head/base, one pair of processes a file (pairs)", fontsize=7)
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
