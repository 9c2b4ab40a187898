"""What recorded A/B rounds say, without a GPU: `flux-perf ab-pairs` re-judges the pairs of
`ab --json` files (version 1, a verdict per block, and version 2, a verdict per case).

- `verdict_rates`: blocks of n pairs drawn with replacement from a file's pairs: a quick guide to
  how many pairs a machine needs (resamples share pairs, so they are not independent runs).
- `disjoint_runs`: a file's rounds cut into consecutive runs of n pairs that share no pair, each
  judged as `flux-perf ab` judges a run (rule.py: all its pairs, the control, Holm). These are
  real runs on the same warm workers: their counts are the gate's error rate and power there.
- `blocks_added`: consecutive recorded blocks judged together, by that rule and by the one it
  replaced (a change only where every block agrees), as blocks are added.
- `between_processes`: each file's A vs A pooled over all its pairs. A file is one pair of worker
  processes; its interval covers those processes' rounds, so files that disagree beyond their
  intervals show a difference between processes that no number of pairs in one run can see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .abfile import load_ab_file
from .rule import CONFIDENCE, FAMILY_ALPHA, PASSES, holm_over, pool, verdict_of
from .worker import AbError
from ..gate.stats import Change, change_of, paired_ratio

VERDICTS = [change.value for change in Change]


@dataclass
class RecordedCase:
    """One case of an `ab --json` file: its rounds in the order taken, blocks and costs."""

    file: str
    name: str  # stack-scenario
    base_s: list[float]
    head_s: list[float]
    control_s: list[float] | None
    block_pairs: list[int]  # pairs of each recorded block, in order
    pair_seconds: list[float]  # each pair's share of its block's wall clock, every side
    planted_head: float  # the slow-down planted on the head, relative to base (0: none)
    planted_control: float | None
    same_code: bool  # base and head said they ran the same commit from the same folder
    prepare_s: float

    def comparisons(self) -> list[tuple[str, list[float], float]]:
        """(what, rounds set against base, planted slow-down)."""
        head = ("head/base", self.head_s, self.planted_head)
        return [head] + ([("control/base", self.control_s, self.planted_control)] if self.control_s else [])


def kind_of(what: str, planted: float, same_code: bool) -> str:
    if planted:
        return f"planted {planted:.1%}"
    return "A vs A" if same_code and what == "head/base" else "head vs base"


def _recorded_case(path: Path, settings: dict, case: dict) -> RecordedCase:
    inject = settings.get("inject") or {}
    blocks = case["blocks"]
    seconds = []
    for block in blocks:
        control_s = (block.get("control") or {}).get("control_s", [])
        spent = block.get("seconds") or sum(block["base_s"]) + sum(block["head_s"]) + sum(control_s)
        seconds += [spent / len(block["base_s"])] * len(block["base_s"])
    controls = [block["control"]["control_s"] for block in blocks if block.get("control")]
    base, head = case.get("base") or {}, case.get("head") or {}
    return RecordedCase(
        file=str(path), name=f"{case['stack']}-{case['scenario']}",
        base_s=[t for b in blocks for t in b["base_s"]], head_s=[t for b in blocks for t in b["head_s"]],
        control_s=[t for c in controls for t in c] if controls else None,
        block_pairs=[len(b["base_s"]) for b in blocks], pair_seconds=seconds,
        planted_head=(1 + (inject.get("head") or 0)) / (1 + (inject.get("base") or 0)) - 1,
        planted_control=settings.get("control"),
        same_code=bool(base.get("code")) and all(base.get(k) == head.get(k) for k in ("commit", "code")),
        prepare_s=case.get("prepare_s") or 0.0)


@dataclass
class RecordedFile:
    """An `ab --json` file, read and checked once: its settings and its cleanly measured cases."""

    path: Path
    settings: dict
    cases: list[RecordedCase]


def read_file(path: Path) -> RecordedFile:
    data = load_ab_file(path)
    settings = data.get("settings") or {}
    return RecordedFile(Path(path), settings, [_recorded_case(Path(path), settings, case) for case in data["cases"]
                                               if case["blocks"] and not case.get("error")
                                               and not case.get("foreign_processes")])


def read_files(paths: list[Path]) -> list[RecordedFile]:
    return [read_file(path) for path in paths]


def read_cases(path: Path) -> list[RecordedCase]:
    """The cases of an `ab --json` file that measured cleanly (no error, no foreign process)."""
    return read_file(path).cases


def measured_pairs(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Every (base, head) pair of rounds of an `ab --json` file, per case; `<case> control` too."""
    pairs = {}
    for case in read_cases(path):
        pairs[case.name] = list(zip(case.base_s, case.head_s))
        if case.control_s:
            pairs[f"{case.name} control"] = list(zip(case.base_s, case.control_s))
    return pairs


def verdict_rates(pairs: list[tuple[float, float]], sizes: list[int], tolerance: float, draws: int = 400,
                  seed: int = 0) -> dict[int, dict[str, float]]:
    """How often a block of n pairs, drawn with replacement from measured (base, head) pairs,
    gets each verdict from its own interval."""
    if len(pairs) < 2:
        raise AbError(f"{len(pairs)} measured pairs: need at least 2 to resample")
    rng = random.Random(seed)
    rates = {}
    for n in sizes:
        counts = dict.fromkeys(VERDICTS, 0)
        for _ in range(draws):
            base, head = zip(*rng.choices(pairs, k=n))
            counts[change_of(paired_ratio(base, head, CONFIDENCE), tolerance).value] += 1
        rates[n] = {change: count / draws for change, count in counts.items()}
    return rates


def judge_run(cases: list[RecordedCase], windows: list[slice], tolerance: float,
              family: int | None) -> list[dict[str, tuple[str, str | None]]]:
    """The verdicts (and why) `flux-perf ab` gives a run made of each case's pairs in its window,
    Holm over `family` cases (at least the file's; missing ones count as unchanged). Per case:
    "head/base", and "control/base": the control judged in its case's place (would the gate
    have caught it?)."""
    size = max(family or 0, len(cases))
    heads = [pool(c.base_s[w], c.head_s[w], tolerance) for c, w in zip(cases, windows)]
    controls = [pool(c.base_s[w], c.control_s[w], tolerance) if c.control_s else None
                for c, w in zip(cases, windows)]
    rejected = holm_over([head.p_slower for head in heads], size)
    verdicts = []
    for i, (head, control) in enumerate(zip(heads, controls)):
        verdict = {"head/base": verdict_of(head, control, rejected[i], size)}
        if control:
            in_place = [control.p_slower if j == i else other.p_slower for j, other in enumerate(heads)]
            verdict["control/base"] = verdict_of(control, None, holm_over(in_place, size)[i], size)
        verdicts.append(verdict)
    return verdicts


def old_rule(case: RecordedCase, blocks: range, tolerance: float) -> dict[str, tuple[str, None]]:
    """The rule before pooling: each block its own verdict (a `same` needs that block's control
    seen slower), and a change only where every block agrees."""
    starts = [sum(case.block_pairs[:i]) for i in range(len(case.block_pairs) + 1)]
    changes: dict[str, list[str]] = {what: [] for what, _, _ in case.comparisons()}
    for b in blocks:
        window = slice(starts[b], starts[b + 1])
        for what, rounds, _ in case.comparisons():
            changes[what].append(change_of(paired_ratio(case.base_s[window], rounds[window]), tolerance).value)
    if "control/base" in changes:
        changes["head/base"] = [Change.INCONCLUSIVE.value if own in PASSES and control != "slower" else own
                                for own, control in zip(changes["head/base"], changes["control/base"])]
    return {what: (seen[0] if len(set(seen)) == 1 else Change.INCONCLUSIVE.value, None)
            for what, seen in changes.items()}


def _entry(table: dict, case: RecordedCase, what: str, planted: float, **extra) -> dict:
    kind = kind_of(what, planted, case.same_code)
    entry = table.setdefault((case.name, what, kind, *extra.values()),
                             {"case": case.name, "comparison": what, "kind": kind, "planted": planted, **extra,
                              "files": []})
    if case.file not in entry["files"]:
        entry["files"].append(case.file)
    return entry


def _count(counts: dict, label: str, verdict: tuple[str, str | None]) -> None:
    """One more run with this verdict; a slower interval that Holm did not confirm counts apart too."""
    seen = counts.setdefault(label, {"runs": 0, **dict.fromkeys(VERDICTS, 0), "slower_alone_not_after_holm": 0})
    seen["runs"] += 1
    seen[verdict[0]] += 1
    seen["slower_alone_not_after_holm"] += bool(verdict[1] and "Holm" in verdict[1])


def _file_runs(cases: list[RecordedCase], sizes: list[int], tolerance: float,
               family: int | None) -> dict[tuple[str, str], dict]:
    """Per (case, comparison) of one file: the verdicts of its disjoint runs per size, with each
    run's minutes of rounds (its pairs' share of their blocks' wall clock)."""
    counts: dict = {}
    for n in sizes:
        runs = min(len(case.base_s) for case in cases) // n if cases else 0
        for j in range(runs):
            window = slice(j * n, (j + 1) * n)
            for case, verdicts in zip(cases, judge_run(cases, [window] * len(cases), tolerance, family)):
                for what, verdict in verdicts.items():
                    sized = counts.setdefault((case.name, what), {})
                    _count(sized, str(n), verdict)
                    sized[str(n)].setdefault("minutes", []).append(sum(case.pair_seconds[window]) / 60)
    return counts


def disjoint_runs(files: list[RecordedFile], sizes: list[int], tolerance: float,
                  family: int | None = None) -> list[dict]:
    """Per comparison (case, head or control, what was planted), over every file and per file:
    for each run size n, how many disjoint runs of n consecutive pairs got each verdict, and the
    mean minutes of rounds a run took (preparing the sides comes on top, once per run)."""
    table: dict = {}
    for file in files:
        path, cases = file.path, file.cases
        counts = _file_runs(cases, sizes, tolerance, family)
        for case in cases:
            for what, rounds, planted in case.comparisons():
                entry = _entry(table, case, what, planted)
                entry["pairs"] = entry.get("pairs", 0) + len(case.base_s)
                own = counts.get((case.name, what), {})
                entry.setdefault("by_file", {})[str(path)] = {
                    "pairs": len(case.base_s), "ratio": round(paired_ratio(case.base_s, rounds).ratio, 4),
                    "sizes": {n: {k: v for k, v in c.items() if k != "minutes"} for n, c in own.items()}}
                for n, c in own.items():
                    merged = entry.setdefault("sizes", {}).setdefault(n, {})
                    for key, value in c.items():
                        merged[key] = merged.get(key, type(value)()) + value
    for entry in table.values():
        for counts in entry.get("sizes", {}).values():
            counts["minutes"] = round(sum(counts["minutes"]) / len(counts["minutes"]), 2)
    return list(table.values())


def blocks_added(files: list[RecordedFile], tolerance: float, family: int | None = None) -> list[dict]:
    """Per comparison and block size, over every file: runs of 1, 2, ... consecutive recorded
    blocks (disjoint), each judged by the old rule (every block must agree) and the pooled one."""
    table: dict = {}
    for cases in (file.cases for file in files):
        for added in range(1, max((len(c.block_pairs) for c in cases), default=0) + 1):
            for j in range(min(len(c.block_pairs) for c in cases) // added):
                blocks = range(j * added, (j + 1) * added)
                windows = [slice(sum(c.block_pairs[:blocks.start]), sum(c.block_pairs[:blocks.stop])) for c in cases]
                for case, pooled in zip(cases, judge_run(cases, windows, tolerance, family)):
                    old = old_rule(case, blocks, tolerance)
                    for what, _, planted in case.comparisons():
                        entry = _entry(table, case, what, planted, pairs_per_block=case.block_pairs[0])
                        judged = entry.setdefault("blocks", {}).setdefault(str(added), {})
                        _count(judged, "old", old[what])
                        _count(judged, "pooled", pooled[what])
    return list(table.values())


def between_processes(files: list[RecordedFile]) -> list[dict]:
    """Per case run A against A (same code on both sides, nothing planted on the head): each file's
    pooled head/base and 95 % interval, and how many of those intervals leave out 1."""
    table: dict = {}
    for file in files:
        for case in file.cases:
            if not case.same_code or case.planted_head:
                continue
            pooled = paired_ratio(case.base_s, case.head_s, CONFIDENCE)
            entry = table.setdefault(case.name, {"case": case.name, "files": []})
            entry["files"].append({"file": str(file.path), "pairs": len(case.base_s), "ratio": round(pooled.ratio, 4),
                                   "low": round(pooled.low, 4), "high": round(pooled.high, 4),
                                   "leaves_out_1": not pooled.low <= 1 <= pooled.high})
    for entry in table.values():
        ratios = [row["ratio"] for row in entry["files"]]
        entry.update(ratio_range=[min(ratios), max(ratios)],
                     leaving_out_1=sum(row["leaves_out_1"] for row in entry["files"]))
    return list(table.values())


def format_between(entries: list[dict]) -> str:
    if not entries:
        return "A vs A across files: no file runs the same code on both sides"
    lines = ["A vs A across files: each file is one pair of worker processes, and its interval covers only "
             "their rounds; intervals that leave out 1 show a difference between processes"]
    for entry in entries:
        (low, high), count = entry["ratio_range"], len(entry["files"])
        lines.append(f"{entry['case']} ({count} file{'s' if count > 1 else ''}): head/base {low:.4f}-{high:.4f}, "
                     f"{entry['leaving_out_1']} of {count} intervals leave out 1")
        for row in entry["files"]:
            lines.append(f"  {row['ratio']:.4f} ({row['low']:.4f}-{row['high']:.4f}) {row['pairs']:>4} pairs  "
                         f"{Path(row['file']).name}" + ("  <- leaves out 1" if row["leaves_out_1"] else ""))
    return "\n".join(lines)


def rule_settings(tolerance: float, family: int | None) -> dict:
    return {"confidence": CONFIDENCE, "family_alpha": FAMILY_ALPHA, "tolerance": tolerance,
            "family": family or "the file's cases"}


def files_summary(files: list[RecordedFile]) -> list[dict]:
    """What each file holds, and what preparing its sides cost (once per run, on top of its rounds)."""
    summary = []
    for file in files:
        cases, settings = file.cases, file.settings
        summary.append({"file": str(file.path), "cases": [c.name for c in cases], "blocks": [c.block_pairs for c in cases],
                        "pinned": settings.get("pinned"), "control": settings.get("control"),
                        "prepare_min": [round(c.prepare_s / 60, 2) for c in cases]})
    return summary


def _title(entry: dict) -> str:
    return f"{entry['case']} {entry['comparison']}, {entry['kind']}"


def _tally(counts: dict) -> str:
    shown = "  ".join(f"{verdict} {counts[verdict]}" for verdict in VERDICTS if counts[verdict])
    held = counts.get("slower_alone_not_after_holm")
    return shown + (f" (of which slower alone, not after Holm: {held})" if held else "")


def format_runs(entries: list[dict], sizes: list[int], tolerance: float, family: int | None) -> str:
    over = f"{family} cases" if family else "each file's cases"
    lines = [f"disjoint runs of n consecutive pairs (no pair in two runs), each judged as `flux-perf ab` judges "
             f"a run: all its pairs, tolerance {tolerance:.0%}, Holm over {over} (family-wise {FAMILY_ALPHA:.1%})"]
    for entry in entries:
        files = len(entry["files"])
        lines.append(f"{_title(entry)} ({entry['pairs']} pairs, {files} file{'s' if files > 1 else ''}):")
        for n in sizes:
            counts = entry.get("sizes", {}).get(str(n))
            lines.append(f"  {n:>4} pairs: " + (f"{counts['runs']:>3} runs  {_tally(counts)};  "
                                                 f"{counts['minutes']:.2f} min of rounds a run" if counts else
                                                 "no run: no file holds that many pairs of this case"))
    return "\n".join(lines)


def format_blocks(entries: list[dict]) -> str:
    lines = ["recorded blocks judged together as blocks are added: the old rule (a change only where every "
             "block agrees) | the pooled rule"]
    for entry in entries:
        lines.append(f"{_title(entry)}, blocks of {entry['pairs_per_block']} pairs:")
        for added, judged in entry["blocks"].items():
            lines.append(f"  {added:>3} block{'s' if added != '1' else ' '}: {judged['old']['runs']:>3} runs  "
                         f"old: {_tally(judged['old'])}"
                         f"  | pooled: {_tally(judged['pooled'])}")
    return "\n".join(lines)
