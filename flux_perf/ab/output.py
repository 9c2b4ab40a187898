"""What an A/B shows and keeps: the table printed at the end (each case from all its pairs, then
each block) and the `--json` file (version 2: a verdict per case from all its pairs, after Holm)."""

from __future__ import annotations

import statistics
from dataclasses import asdict

from .orchestrator import AbCase, host_contention
from .rule import CONFIDENCE, FAMILY_ALPHA


def _row(label: str, base_s: list[float], ratio: float, low: float, high: float,
         said: str) -> str:
    # The other side as the verdict sees it, base x the paired ratio: its own median can sit on the
    # other side of base's (rounds that drift) beside a ratio that says the opposite.
    base = statistics.median(base_s)
    return f"{label:<28} {len(base_s):>5} {base:>8.4f} {base * ratio:>8.4f} {ratio:>10.4f}  {low:.4f}-{high:.4f}   {said}"


def _case_lines(case: AbCase) -> list[str]:
    name = f"{case.stack}-{case.scenario}"
    if case.error:
        return [f"{name:<28} ERROR: {case.error.splitlines()[0]}"]
    if case.pooled is None:
        return [f"{name:<28} no rounds"]
    verdict, reason = case.judged
    pooled, control = case.pooled, case.control_pooled
    lines = [_row(name, case.rounds("base"), pooled.ratio, pooled.low, pooled.high,
                  verdict + (f" ({reason})" if reason else ""))]
    if control:
        lines.append(_row("  control", case.rounds("base"), control.ratio, control.low,
                          control.high, control.change))
    for number, block in enumerate(case.blocks, 1):
        lines.append(_row(f"  block {number}", block.base_s, block.ratio, block.ratio_low,
                          block.ratio_high, block.change))
        if block.control:
            lines.append(_row(f"  block {number} control", block.base_s,
                              block.control["ratio"], block.control["ratio_low"], block.control["ratio_high"],
                              block.control["change"]))
    rounds = len(case.rounds("base")) + len(case.rounds("head")) + len(case.rounds("control"))
    minutes = (case.prepare_s + sum(b.seconds for b in case.blocks)) / 60
    lines.append(f"{'':<28} {rounds} rounds ({len(case.blocks)} blocks of {case.pairs} pairs), {minutes:.1f} min "
                 f"(preparing the sides {case.prepare_s:.0f} s)")
    if case.foreign_processes:
        named = ", ".join(f"pid {p['pid']} {p.get('name') or '?'}" for p in case.foreign_processes)
        lines.append(f"{'':<28} DISTURBED: other processes on the GPU: {named}")
    busy = [f"{number} ({said})" for number, block in enumerate(case.blocks, 1) if (said := host_contention(block))]
    if busy:
        lines.append(f"{'':<28} host busy in block {'; '.join(busy)}: shared by both sides of each pair, so a "
                     "wider interval, not a bias")
    slowed = [f for f in case.card.get("flags", []) if f in ("thermal-throttle", "hw-slowdown")]
    if slowed:
        # Both sides ran on the same slowed card, so the pairs stay fair; only their spread grows
        # (measured on a card at 86-92 C: 512x512@6 intervals 2-10 % wide instead of +-0.2 %).
        lines.append(f"{'':<28} card slowed ({', '.join(slowed)}; SM clock {case.card.get('sm_clock_mhz')} MHz, "
                     f"up to {case.card.get('temperature_c_max')} C): wider intervals, more inconclusive cases")
    return lines


def format_cases(cases: list[AbCase], tolerance: float) -> str:
    lines = [f"{'case (all pairs, then each block)':<28} {'pairs':>5} {'base s':>8} {'other s*':>8} {'ratio':>10}  "
             f"95% interval      verdict (tolerance {tolerance:.0%})"]
    for case in cases:
        lines += _case_lines(case)
    family = sum(case.in_family for case in cases)
    left_out = [f"{c.stack}-{c.scenario} ({c.verdict})" for c in cases if not c.in_family]
    lines.append(f"slower needs Holm's correction over {family} case{'s' if family != 1 else ''} (family-wise "
                 f"{FAMILY_ALPHA:.1%}, one-sided: head/base above {1 + tolerance:g})"
                 + (f"; not in the family: {', '.join(left_out)}" if left_out else ""))
    lines.append("base s: the median of base's rounds; other s* = base s x ratio, the ratio the verdict judges "
                 "(Hodges-Lehmann of the pairs' other/base, pair by pair), not a ratio of two medians")
    return "\n".join(lines)


def cases_to_json(cases: list[AbCase], settings: dict, final: bool = True, not_decidable: list[dict] = ()) -> dict:
    """Version 2: a verdict per case from all its pairs, after Holm (version 1: per block).
    `final` False: written after a block, decided over the cases measured so far. `not_decidable`:
    what the suite run of --undecided-from left unjudged that no A/B can decide, exit 6's other reason."""
    return {"flux_perf_ab": 2, "settings": settings, "final": final, "confidence": CONFIDENCE,
            "family_alpha": FAMILY_ALPHA, "holm_family": sum(case.in_family for case in cases),
            "cases": [{**asdict(case), "verdict": case.verdict, "reason": case.judged[1],
                       "block_changes": case.block_changes} for case in cases],
            "not_decidable": list(not_decidable)}
