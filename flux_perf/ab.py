"""Interleaved A/B on one machine: the regression gate for pull requests.

Two worker processes, one per checkout (each imports its own flux_perf, so each side's own
code runs), build and warm the same case; both models stay on the GPU. Then rounds alternate
A B B A A B ... so drift (clocks, temperature) hits both sides alike, one round at a time,
never both at once. Each block of pairs gives a paired verdict: the Hodges-Lehmann ratio
head/base with its Wilcoxon signed-rank interval (stats.paired_comparison), against a
tolerance band. The plan is fixed (pairs x blocks) before the first timed round, so no look
inflates the error rate; by default the pairs fill about a minute of rounds per block, sized
from the warm-up's round time (a short case gets more pairs).

With `control`, a third worker runs the head's code with a planted slow-down, interleaved with
the other two: a positive control. A block that cannot see it slower cannot vouch that nothing
changed either, so its `same` becomes `inconclusive`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .gate.stats import Change, change_of, paired_ratio


def paired_comparison(base, head, tolerance):  # until the pooled A/B verdict lands
    interval = paired_ratio(base, head)
    from types import SimpleNamespace
    return SimpleNamespace(ratio=interval.ratio, ratio_low=interval.low, ratio_high=interval.high,
                           change=change_of(interval, tolerance))

WORKER = Path(__file__).with_name("ab_worker.py")
BLOCK_SECONDS = 60.0  # of rounds per block, all sides together, when the pairs are not given
MIN_PAIRS, MAX_PAIRS = 10, 200


class AbError(RuntimeError):
    """A side that cannot be started, built or timed."""


def check_checkout(path: Path, side: str) -> Path:
    path = Path(path).expanduser().resolve()
    if not (path / "flux_perf" / "__init__.py").is_file():
        raise AbError(f"--{side} {path}: not a flux-perf checkout (no flux_perf/__init__.py there)")
    if not (path / "flux_perf" / "runner.py").is_file():
        raise AbError(f"--{side} {path}: this flux-perf predates the case runner (flux_perf/runner.py); "
                      "A/B needs both sides at or after it")
    return path


CORES_VARIABLE = "FLUX_PERF_AB_CORES"


def split_cores(available: set[int]) -> tuple[list[int], list[int]]:
    """Cores for the two workers (the same ones: only one side runs at a time, so neither gets
    cores the other did not) and the rest for the orchestrator and its telemetry thread."""
    cores = sorted(available)
    if len(cores) < 4:
        return cores, cores  # too few to keep apart
    workers = cores[-min(4, len(cores) // 2):]
    return workers, [c for c in cores if c not in workers]


class Worker:
    """One side's process."""

    def __init__(self, side: str, checkout: Path, log: Callable[[str], None], cores: list[int] | None = None):
        self.side = side
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
        if cores:
            env[CORES_VARIABLE] = ",".join(map(str, cores))  # the worker pins itself first thing
        self.process = subprocess.Popen([sys.executable, str(WORKER)], cwd=checkout, env=env, text=True, bufsize=1,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.tail: list[str] = []

        def forward() -> None:  # progress of a side, live, and the last lines for errors
            for line in self.process.stderr:
                self.tail = (self.tail + [line.rstrip()])[-20:]
                if line.startswith(f"[{side}]"):
                    log(line.rstrip())

        threading.Thread(target=forward, daemon=True).start()

    def send(self, **request) -> None:
        try:
            self.process.stdin.write(json.dumps({**request, "side": self.side}) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reply read next says the worker is gone

    def receive(self) -> dict:
        try:
            line = self.process.stdout.readline()
        except OSError:
            line = ""
        if not line:
            raise AbError(f"{self.side} worker exited (code {self.process.poll()}):\n" + "\n".join(self.tail[-12:]))
        reply = json.loads(line)
        if not reply.get("ok"):
            raise AbError(f"{self.side}: {reply.get('error')}")
        return reply

    def ask(self, **request) -> dict:
        self.send(**request)
        return self.receive()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask(cmd="quit")
            except AbError:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Block:
    """One verdict: `pairs` interleaved pairs of rounds."""

    base_s: list[float]
    head_s: list[float]
    ratio: float
    ratio_low: float
    ratio_high: float
    change: str
    seconds: float = 0.0  # wall clock of the block's rounds, every side
    # The positive control against base, when the run has one: rounds, ratio, interval, change.
    control: dict | None = None
    why: str | None = None  # why the verdict is not the paired comparison's own


@dataclass
class AbCase:
    stack: str
    scenario: str
    base: dict  # what each worker said when ready (commit, code folder, first call, warm-up)
    head: dict
    blocks: list[Block] = field(default_factory=list)
    control: dict | None = None  # what the control worker said when ready
    foreign_processes: list[dict] = field(default_factory=list)
    card: dict = field(default_factory=dict)  # NVML over the rounds: flags, median SM clock, hottest
    error: str | None = None
    prepare_s: float = 0.0  # every side built, compiled and warmed, one after the other
    pairs: int = 0  # per block: given, or sized from the warm-up's round time

    @property
    def counts(self) -> dict:
        return {change.value: sum(b.change == change.value for b in self.blocks) for change in Change}

    @property
    def verdict(self) -> str:
        """Of the whole case: a change only when every block agrees; disturbed beats all."""
        if self.error:
            return "error"
        if self.foreign_processes:
            return "disturbed"
        changes = {b.change for b in self.blocks}
        return changes.pop() if len(changes) == 1 else Change.INCONCLUSIVE.value


def foreign_processes(seen: list[dict], ours: set[int]) -> list[dict]:
    """GPU processes that are neither side. In a container NVML may name host PIDs that our
    /proc does not show ("verified": False): each of our two workers may hide behind one."""
    others = [p for p in seen if p.get("pid") not in ours]
    unverified = [p for p in others if not p.get("verified", True)]
    hidden_workers = len(ours) - sum(1 for p in seen if p.get("pid") in ours)
    if any(p.get("verified", True) for p in others) or len(unverified) > hidden_workers:
        return others
    return []


def interleaved_order(pairs: int, sides: tuple[str, ...] = ("base", "head")) -> list[tuple[str, ...]]:
    """ABBA ABBA ... (ABC CBA with a control): each side goes first as often as last, so linear
    drift cancels in every comparison with base."""
    return [tuple(sides) if i % 2 == 0 else tuple(reversed(sides)) for i in range(pairs)]


def controlled(change: Change, control: Change) -> tuple[Change, str | None]:
    """The block's verdict given its positive control: `same` needs the control seen slower."""
    if change is Change.SAME and control is not Change.SLOWER:
        return Change.INCONCLUSIVE, f"the planted control was not seen slower ({control.value}): 'same' unproven"
    return change, None


def pairs_for(round_s: float, sides: int, block_seconds: float, minimum: int = MIN_PAIRS,
              maximum: int = MAX_PAIRS) -> int:
    """Pairs that fill `block_seconds` of rounds on every side: a short case gets more pairs for
    the same minute. H100, fast: single rounds spread 2-4 % at 512x512@6, where resampling the
    measured pairs calls a 2 % plant slower in 35 % of 10-pair blocks and 96 % of 60-pair ones;
    at 1024x1024@8, 10 pairs call it slower in 95 % (docs/measurement.md)."""
    if not (round_s > 0 and math.isfinite(round_s)):
        raise AbError(f"round time {round_s!r} s: cannot size the blocks from it")
    return max(minimum, min(maximum, math.ceil(block_seconds / (sides * round_s))))


def run_ab(base: Path, head: Path, stacks: list[str], scenarios: list[str], *, pairs: int | None = None,
           blocks: int = 1, block_seconds: float = BLOCK_SECONDS,
           tolerance: float = 0.01, model: str | None = None, device: str = "cuda",
           inject: dict | None = None, log: Callable[[str], None] = print, pin: bool = True,
           control: float | None = None,
           on_block: Callable[[list[AbCase]], None] = lambda cases: None) -> list[AbCase]:
    """A/B every (stack, scenario); `inject` = {"base": fraction, "head": fraction} plants a
    slow-down on a side (to prove the gate); `control` adds the head's code with that planted
    slow-down as a third side (module docstring). `on_block` sees the cases after every block
    (to keep the rounds on disk if the run is cut short)."""
    from .instrument.telemetry import TelemetrySampler

    base, head = check_checkout(base, "base"), check_checkout(head, "head")
    if pairs is not None and pairs < 2:
        raise AbError(f"pairs={pairs}: need at least 2 pairs a block")
    if blocks < 1:
        raise AbError(f"blocks={blocks}: need at least 1 block")
    if not (block_seconds > 0 and math.isfinite(block_seconds)):
        raise AbError(f"block_seconds={block_seconds}: must be a positive, finite number of seconds")
    inject = inject or {}
    if control is not None and not 0 < control < 1:
        raise AbError(f"control={control}: the planted slow-down must be a fraction in (0, 1), e.g. 0.02")
    sides = {"base": base, "head": head, **({"control": head} if control else {})}
    inject = {**inject, **({"control": control} if control else {})}
    worker_cores, before = None, None
    if pin and hasattr(os, "sched_setaffinity"):
        # Host-bound rounds moved with the scheduler's choice of core (512: single rounds 5-10 % slow).
        before = os.sched_getaffinity(0)
        worker_cores, own = split_cores(before)
        os.sched_setaffinity(0, own)
        log(f"workers pinned to cores {worker_cores}, this process to {own}")
    workers = {side: Worker(side, path, log, worker_cores) for side, path in sides.items()}
    results = []
    try:
        for stack in stacks:
            for scenario in scenarios:
                case = AbCase(stack, scenario, {}, {})
                results.append(case)
                started = time.monotonic()
                try:
                    # One side at a time, on an otherwise idle GPU: warm-up decides when a case is
                    # steady and the planted slow-down sizes itself from a warm step (measured on the
                    # H100: built at once, the plant calibrated on a shared GPU and came out 3x too big).
                    readiness: dict[str, dict] = {}  # what each side said when ready
                    for side, worker in workers.items():
                        log(f"{side}: preparing {stack} at {scenario} from {sides[side]}")
                        readiness[side] = worker.ask(cmd="prepare", stack=stack, scenario=scenario, model=model,
                                                     device=device, inject_slowdown=inject.get(side))
                    case.base, case.head = readiness["base"], readiness["head"]
                    case.control = readiness.get("control")
                    prints = {side: ready.get("fingerprint") for side, ready in readiness.items()}
                    if len(set(prints.values())) > 1:
                        raise AbError(f"the sides built different weights: {prints}")
                    case.prepare_s = time.monotonic() - started
                    warm = [ready["warmup_s"][-1] for ready in readiness.values() if ready.get("warmup_s")]
                    round_s = statistics.median(warm) if warm else float("nan")
                    case.pairs = pairs or pairs_for(round_s, len(workers), block_seconds)
                    if not pairs:
                        log(f"{stack} {scenario}: {case.pairs} pairs a block (~{block_seconds:.0f} s of rounds at "
                            f"{round_s:.3f} s a round, {len(workers)} sides)")
                    ours = {ready["pid"] for ready in readiness.values()}
                    sampler = TelemetrySampler(0, 0.1) if device.startswith("cuda") else None
                    if sampler:
                        sampler.start()
                    try:
                        for number in range(blocks):
                            walls: dict[str, list[float]] = {side: [] for side in workers}
                            block_started = time.monotonic()
                            for order in interleaved_order(case.pairs, tuple(workers)):
                                for side in order:
                                    walls[side].append(workers[side].ask(cmd="round")["wall_s"])
                            comparison = paired_comparison(walls["base"], walls["head"], tolerance)
                            change, why, seen = comparison.change, None, None
                            if control:
                                against = paired_comparison(walls["base"], walls["control"], tolerance)
                                seen = {"control_s": walls["control"], "ratio": against.ratio,
                                        "ratio_low": against.ratio_low, "ratio_high": against.ratio_high,
                                        "change": against.change.value}
                                change, why = controlled(change, against.change)
                            case.blocks.append(Block(walls["base"], walls["head"], comparison.ratio,
                                                     comparison.ratio_low, comparison.ratio_high, change.value,
                                                     time.monotonic() - block_started, seen, why))
                            shown = f"; control/base {seen['ratio']:.4f} {seen['change']}" if seen else ""
                            log(f"{stack} {scenario} block {number + 1}/{blocks}: head/base {comparison.ratio:.4f} "
                                f"({comparison.ratio_low:.4f}-{comparison.ratio_high:.4f}) {change.value}{shown}")
                            on_block(results)
                    finally:
                        report = sampler.stop() if sampler else None
                    if report is not None:
                        case.foreign_processes = foreign_processes(report.other_processes, ours)
                        summary = report.summary()
                        case.card = {"flags": [f for f in report.flags() if f != "other-processes"],
                                     "sm_clock_mhz": (summary.get("sm_clock_mhz") or {}).get("median"),
                                     "temperature_c_max": (summary.get("temperature_c") or {}).get("max")}
                except AbError as error:
                    case.error = str(error)
                    log(f"{stack} {scenario}: ERROR {error}")
    finally:
        for worker in workers.values():
            worker.close()
        if before is not None:
            os.sched_setaffinity(0, before)
    return results


def format_cases(cases: list[AbCase], tolerance: float) -> str:
    lines = [f"{'case':<28} {'base s':>8} {'head s':>8} {'head/base':>10}  95% interval      verdict "
             f"(tolerance {tolerance:.0%})"]
    for case in cases:
        name = f"{case.stack}-{case.scenario}"
        if case.error:
            lines.append(f"{name:<28} ERROR: {case.error.splitlines()[0]}")
            continue
        for block in case.blocks:
            lines.append(f"{name:<28} {sorted(block.base_s)[len(block.base_s) // 2]:>8.3f} "
                         f"{sorted(block.head_s)[len(block.head_s) // 2]:>8.3f} {block.ratio:>10.4f}  "
                         f"{block.ratio_low:.4f}-{block.ratio_high:.4f}   {block.change}")
            if block.control:
                lines.append(f"{'':<28} {'control':>17} {block.control['ratio']:>10.4f}  "
                             f"{block.control['ratio_low']:.4f}-{block.control['ratio_high']:.4f}   "
                             f"{block.control['change']}" + (f" ({block.why})" if block.why else ""))
        if len(case.blocks) > 1:
            counts = ", ".join(f"{k} {v}" for k, v in case.counts.items() if v)
            lines.append(f"{'':<28} {len(case.blocks)} blocks: {counts}")
        if case.blocks:
            rounds = sum(len(b.base_s) + len(b.head_s) + len((b.control or {}).get("control_s", ()))
                         for b in case.blocks)
            minutes = (case.prepare_s + sum(b.seconds for b in case.blocks)) / 60
            lines.append(f"{'':<28} {rounds} rounds ({case.pairs} pairs a block), {minutes:.1f} min "
                         f"(preparing the sides {case.prepare_s:.0f} s)")
        if case.foreign_processes:
            named = ", ".join(f"pid {p['pid']} {p.get('name') or '?'}" for p in case.foreign_processes)
            lines.append(f"{'':<28} DISTURBED: other processes on the GPU: {named}")
        slowed = [f for f in case.card.get("flags", []) if f in ("thermal-throttle", "hw-slowdown")]
        if slowed:
            # Both sides ran on the same slowed card, so the pairs stay fair; only their spread grows
            # (measured on a card at 86-92 C: 512x512@6 intervals 2-10 % wide instead of +-0.2 %).
            lines.append(f"{'':<28} card slowed ({', '.join(slowed)}; SM clock {case.card.get('sm_clock_mhz')} MHz, "
                         f"up to {case.card.get('temperature_c_max')} C): wider intervals, more inconclusive blocks")
    return "\n".join(lines)


def cases_to_json(cases: list[AbCase], settings: dict) -> dict:
    return {"flux_perf_ab": 1, "settings": settings,
            "cases": [{**asdict(case), "verdict": case.verdict, "counts": case.counts} for case in cases]}


def verdict_rates(pairs: list[tuple[float, float]], sizes: list[int], tolerance: float, draws: int = 400,
                  seed: int = 0) -> dict[int, dict[str, float]]:
    """How often a block of n pairs, drawn with replacement from measured (base, head) pairs,
    gets each verdict: the pairs a machine needs before its A/B can see a change."""
    import random

    if len(pairs) < 2:
        raise AbError(f"{len(pairs)} measured pairs: need at least 2 to resample")
    rng = random.Random(seed)
    rates = {}
    for n in sizes:
        counts = dict.fromkeys((c.value for c in Change), 0)
        for _ in range(draws):
            base, head = zip(*rng.choices(pairs, k=n))
            counts[paired_comparison(base, head, tolerance).change.value] += 1
        rates[n] = {change: count / draws for change, count in counts.items()}
    return rates


def measured_pairs(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Every (base, head) pair of rounds of an `ab --json` file, per case."""
    try:
        data = json.loads(Path(path).read_text())
        pairs = {}
        for c in data["cases"]:
            name = f"{c['stack']}-{c['scenario']}"
            pairs[name] = [(b, h) for block in c["blocks"] for b, h in zip(block["base_s"], block["head_s"])]
            control = [(b, k) for block in c["blocks"] if block.get("control")
                       for b, k in zip(block["base_s"], block["control"]["control_s"])]
            if control:
                pairs[f"{name} control"] = control
        return pairs
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AbError(f"{path}: not an `flux-perf ab --json` file ({type(error).__name__}: {error})") from None
