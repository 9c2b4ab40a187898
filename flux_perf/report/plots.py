"""The run's pictures: latency per scenario and stack against its budget and target, and the
card's power, SM clock and temperature over the timed rounds."""

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
            failed = (r.latency or {}).get("failed") or (r.fidelity or {}).get("failed")
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
