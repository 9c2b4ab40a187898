"""The latency verdict with serially correlated rounds (docs/measurement.md, "Serially correlated
rounds"): how often a case exactly at its budget fails, and how often a slower one is caught, when
consecutive rounds follow AR(1) in log time, for each way of widening the intervals that was weighed.
And the committed gate verdicts re-judged, before the widening and with it.

    python3 tools/serial_rounds.py simulate [--reps 20000] [--jobs 2]
    python3 tools/serial_rounds.py rejudge

simulate: 8 reference rounds, a run of 8 -> 16 -> 32 rounds while undecided (3 looks at 98.3 %), 1 %
noise, tolerance 3 %; the run's true time at the budget (false FAIL) or 4.5, 6 and 8 % over the
reference (power: overall, at the first look, mean rounds taken). A pure shift of log time: the
false-FAIL rate does not depend on the noise, the power does (it is power at (ratio - 1) / 1 %).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flux_perf.gate import latency  # noqa: E402
from flux_perf.gate.budgets import LatencyBudget  # noqa: E402
from flux_perf.gate.stats import (  # noqa: E402
    SERIAL_CAP,
    Serial,
    lag1_autocorrelation,
    look_confidence,
    serial_widening,
    two_sample_ratio,
    widen_around,
)
from flux_perf.instrument.rounds import summarize  # noqa: E402

SIZES, LOOKS, TOLERANCE, SIGMA = (8, 16, 32), 3, 0.03, 0.01
RHOS = (0.0, 0.15, 0.3, 0.45, 0.6)
CONFIDENCE = look_confidence(latency.CONFIDENCE, LOOKS)


def _raw_lag1(*series) -> float:
    """Pooled lag-1 autocorrelation of the log rounds, each series centred on its own mean, uncorrected."""
    num = den = 0.0
    for rounds in series:
        x = np.log(rounds) - np.mean(np.log(rounds))
        num, den = num + float(np.dot(x[1:], x[:-1])), den + float(np.dot(x, x))
    return num / den if den > 0 else 0.0


def _clipped(rho: float | None, floor: float = 0.0, cap: float = SERIAL_CAP) -> float:
    rho = cap if rho is None else min(max(rho, floor), cap)
    return math.sqrt((1 + rho) / (1 - rho))


# Each option: the factor on the intervals' half-widths, from the run's and the reference's rounds.
OPTIONS = {
    "independent (before)": lambda *s: 1.0,
    "(a) lag-1 in [0, 0.6]": lambda *s: _clipped(_raw_lag1(*s)),
    "(b) bias-corrected in [0, 0.6]": lambda *s: _clipped(lag1_autocorrelation(*s)),
    "(c) constant 0.15": lambda *s: _clipped(0.15),
    "(c) constant 0.4": lambda *s: _clipped(0.4),
    "(c) constant 0.45": lambda *s: _clipped(0.45),
    "(b) in [0.3, 0.6]": lambda *s: _clipped(lag1_autocorrelation(*s), 0.3),
    "(b) in [0.35, 0.6] (the gate's)": lambda *s: serial_widening(*s).widening,
}


def ar1(rng, n: int, rho: float) -> np.ndarray:
    e = np.empty(n)
    e[0] = rng.normal(0, SIGMA)
    innovations = rng.normal(0, SIGMA * math.sqrt(1 - rho * rho), n)
    for i in range(1, n):
        e[i] = rho * e[i - 1] + innovations[i]
    return e


def _verdict(low: float, high: float, limit: float) -> str:
    return "fail" if low > limit else ("pass" if high <= limit else "inconclusive")


def _look(reference: np.ndarray | None, run: np.ndarray, option) -> str:
    """One look's verdict: the ratio against the reference's rounds, or the median against 1.03 s."""
    if reference is not None:
        ratio = two_sample_ratio(reference, run, CONFIDENCE)
        low, high = widen_around(ratio.ratio, ratio.low, ratio.high, option(run, reference))
        return _verdict(low, high, 1 + TOLERANCE)
    summary = summarize(run, CONFIDENCE)
    if summary.ci_level < CONFIDENCE:
        return "inconclusive"
    low, high = widen_around(summary.median, summary.ci_low, summary.ci_high, option(run))
    return _verdict(low, high, 1 + TOLERANCE)


def _cell(args) -> tuple:
    """(option, kind, rho, true ratio) -> (FAIL share, FAIL at the first look share, mean rounds)."""
    name, kind, rho, truth, reps, seed = args
    rng, option = np.random.default_rng(seed), OPTIONS[name]
    fails = first = rounds = 0
    for _ in range(reps):
        reference = np.exp(ar1(rng, 8, rho)) if kind == "relative" else None
        run = truth * np.exp(ar1(rng, SIZES[-1], rho))
        for look, n in enumerate(SIZES):
            verdict = _look(reference, run[:n], option)
            if verdict != "inconclusive":
                break
        fails, first, rounds = fails + (verdict == "fail"), first + (verdict == "fail" and look == 0), rounds + n
    return name, kind, rho, truth, (fails / reps, first / reps, rounds / reps)


def simulate(reps: int, jobs: int) -> None:
    cells = [(name, kind, rho, 1 + TOLERANCE, reps) for name in OPTIONS for kind in ("relative", "absolute")
             for rho in RHOS]
    cells += [(name, kind, rho, truth, reps // 2) for name in OPTIONS for kind in ("relative", "absolute")
              for truth in (1.045, 1.06, 1.08) for rho in (0.0, 0.3)]
    with Pool(jobs) as pool:
        found = pool.map(_cell, [(*cell, 1000 + i) for i, cell in enumerate(cells)], chunksize=1)
    table = {(name, kind, rho, truth): rates for name, kind, rho, truth, rates in found}
    se = math.sqrt(0.025 * 0.975 / reps)
    for kind in ("relative", "absolute"):
        print(f"\n{kind}: false FAIL at the budget ({reps} runs a cell, standard error {se:.4f} at 0.025); "
              f"power ({reps // 2} runs): overall (first look) [mean rounds], rho 0 / rho 0.3")
        print("| option | " + " | ".join(f"rho {rho}" for rho in RHOS) + " | 1.045 | 1.06 | 1.08 |")
        print("|---" * (len(RHOS) + 4) + "|")
        for name in OPTIONS:
            edge = " | ".join(f"{table[name, kind, rho, 1 + TOLERANCE][0]:.4f}" for rho in RHOS)
            power = " | ".join(" / ".join("{:.3f} ({:.3f}) [{:.1f}]".format(*table[name, kind, rho, truth])
                                          for rho in (0.0, 0.3)) for truth in (1.045, 1.06, 1.08))
            print(f"| {name} | {edge} | {power} |")


def _recorded_rounds() -> dict[float, tuple[float, ...]]:
    """Every recorded latency's rounds in the history of baselines/, by its median."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout

    found = {}
    for commit in git("log", "--all", "--format=%H", "--", "baselines").split():
        for path in git("ls-tree", "-r", "--name-only", commit, "baselines").split():
            if path.endswith("latency.json"):
                for stacks in json.loads(git("show", f"{commit}:{path}")).get("entries", {}).values():
                    found.update({round(e["median_s"], 12): tuple(e["samples_s"]) for e in stacks.values()
                                  if e.get("samples_s")})
    return found


def _budgets(checks: list[dict], recorded: dict) -> list[LatencyBudget] | None:
    budgets = []
    for check in checks:
        b = check["budget"]
        rounds = recorded.get(round(b["reference_s"], 12), ()) if b.get("recorded_rounds") else ()
        if b.get("recorded_rounds") and not rounds:
            return None  # a reference made up for the case (edge-faster: scaled by 1.05)
        budgets.append(LatencyBudget(b["seconds"], b["kind"], b.get("source", ""), b.get("tolerance"), rounds,
                                     reference_s=b.get("reference_s")))
    return budgets


def rejudge() -> None:
    """Each committed verdict of 8 rounds or more, on the rounds it took: before and now."""
    recorded, widening = _recorded_rounds(), latency.serial_widening
    print("| file | case | rounds | lag-1 | widening | before | now | detects before | now |")
    print("|---" * 9 + "|")
    for path in sorted((ROOT / "docs" / "results").glob("*.json")):
        payload = json.loads(path.read_text())
        for record in payload.get("records", []) if "flux_perf_results" in payload else []:
            latency_record, rounds = record.get("latency") or {}, record.get("wall_samples_s") or []
            budgets = _budgets(latency_record.get("checks") or [], recorded)
            if len(rounds) < 8 or not budgets:
                continue
            looks = record.get("looks") or 1
            latency.serial_widening = lambda *s: Serial(None, 0.0, 1.0)
            before = latency.judge_latency(rounds, budgets, looks=looks)
            latency.serial_widening = widening
            now = latency.judge_latency(rounds, budgets, looks=looks)
            serial = now.checks[0].serial
            print(f"| {path.name} | {record['id']} | {len(rounds)} | {serial.lag1:+.2f} | {serial.widening:.2f} | "
                  f"{before.verdict.value} | {now.verdict.value} | {before.detection_limit:+.1%} | "
                  f"{now.detection_limit:+.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("simulate", "rejudge"))
    parser.add_argument("--reps", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    simulate(args.reps, args.jobs) if args.what == "simulate" else rejudge()


if __name__ == "__main__":
    main()
