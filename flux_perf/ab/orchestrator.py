"""Interleaved A/B on one machine: the regression gate for pull requests.

Two worker processes, one per checkout (each imports its own flux_perf, so each side's own
code runs), build and warm the same case; both models stay on the GPU. Then rounds alternate
A B B A A B ... so drift (clocks, temperature) hits both sides alike, one round at a time,
never both at once. The plan is fixed (pairs x blocks) before the first timed round, so no look
inflates the error rate; by default the pairs fill about a minute of rounds per block, sized
from the warm-up's round time (a short case gets more pairs).

A case's verdict comes from all its pairs at once, so more blocks only add power; each block's
own interval shows drift and decides nothing. Across the cases of a run, `slower` needs Holm's
correction: four cases do not get four chances at a false alarm (rule.py).

With `control`, a third worker runs the head's code with a planted slow-down, interleaved with
the other two: a positive control. A case whose pooled control is not seen slower cannot vouch
that nothing changed either, so its `same` becomes `inconclusive`.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .rule import Block, Pooled, holm_over, judge_block, pool, verdict_of
from .worker import AbError, Worker, split_cores, worker_script
from ..gate.stats import Change

BLOCK_SECONDS = 60.0  # of rounds per block, all sides together, when the pairs are not given
MIN_PAIRS, MAX_PAIRS = 10, 200


def check_checkout(path: Path, side: str) -> Path:
    path = Path(path).expanduser().resolve()
    if not (path / "flux_perf" / "__init__.py").is_file():
        raise AbError(f"--{side} {path}: not a flux-perf checkout (no flux_perf/__init__.py there)")
    if worker_script(path) is None:
        raise AbError(f"--{side} {path}: this flux-perf predates the A/B worker (flux_perf/ab/worker.py or "
                      "flux_perf/ab_worker.py); A/B needs both sides at or after it")
    return path


def check_cases(cases: list[tuple[str, str, str]], where: str) -> None:
    """Each (case id, stack, scenario) read here: one that this build cannot read (an edited file,
    another build's) failed only inside the workers, after minutes of building (exit 3)."""
    from ..components.stacks import parse_stack
    from ..model.scenarios import parse_scenario
    from ..suite.config import ConfigError

    for case_id, stack, scenario in cases:
        for what, value, parse in (("stack", stack, parse_stack), ("scenario", scenario, parse_scenario)):
            try:
                parse(value)
            except ValueError as error:
                raise ConfigError(f"{where}: case {case_id} names the {what} {value!r}, "
                                  f"which this flux-perf cannot read: {error}") from None


def check_tolerance(tolerance: float) -> float:
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise AbError(f"tolerance {tolerance!r}: must be a fraction in [0, 1), e.g. 0.01 for 1 %")
    return tolerance


def check_inject(inject: dict | None) -> None:
    """A planted slow-down per side, by the gate's rule for --flux-inject-slowdown (suite/config.py),
    said before any worker starts (a worker refused it per case: an ERROR each, exit 3)."""
    for side, value in (inject or {}).items():
        if value is not None and not 0 < value <= 10:
            raise AbError(f"--{side}-inject-slowdown {value}: must be a fraction in (0, 10], e.g. 0.02")


def check_plan(pairs: int | None, blocks: int, block_seconds: float, control: float | None,
               tolerance: float) -> None:
    if pairs is not None and pairs < 2:
        raise AbError(f"pairs={pairs}: need at least 2 pairs a block")
    if blocks < 1:
        raise AbError(f"blocks={blocks}: need at least 1 block")
    if not (block_seconds > 0 and math.isfinite(block_seconds)):
        raise AbError(f"block_seconds={block_seconds}: must be a positive, finite number of seconds")
    if control is not None and not 0 < control < 1:
        raise AbError(f"control={control}: the planted slow-down must be a fraction in (0, 1), e.g. 0.02")
    if control is not None and control <= tolerance:
        # `slower` needs the whole interval above 1 + tolerance: such a control is seen slower at most
        # 2.5 % of the time, so no case could be `same` (on the H100, 1 % against 1 %: 0 of 2 blocks).
        raise AbError(f"control={control} is not above the tolerance {tolerance}: it could never be seen slower, "
                      f"so no case could be 'same'. Plant more than the tolerance (e.g. {tolerance + 0.01:g}); "
                      "to measure what the A/B sees at the tolerance, plant it with --head-inject-slowdown")


def telemetry_index(device: str) -> int | None:
    """NVML's index of the card the workers use, None off CUDA. cuda:N is the N-th visible card,
    plain cuda torch's current one (0: the workers choose no other). NVML ignores
    CUDA_VISIBLE_DEVICES, so a list of numbers there maps the index to the physical card."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return None
    if index and not index.isdigit():
        raise AbError(f"--device {device}: expected cuda or cuda:N")
    number = int(index or 0)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    return int(visible[number]) if number < len(visible) and all(v.isdigit() for v in visible) else number


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
    pooled: Pooled | None = None  # head/base over every pair of every block: the verdict's interval
    control_pooled: Pooled | None = None  # control/base over every pair
    holm_family: int = 0  # the cases Holm corrected over; 0: this case is not among them
    holm_rejected: bool = False  # Holm rejects "head/base <= 1 + tolerance" for this case

    def rounds(self, side: str) -> list[float]:
        if side == "control":
            return [t for b in self.blocks if b.control for t in b.control["control_s"]]
        return [t for b in self.blocks for t in (b.base_s if side == "base" else b.head_s)]

    def pool_blocks(self, tolerance: float) -> None:
        self.pooled = pool(self.rounds("base"), self.rounds("head"), tolerance)
        if any(b.control for b in self.blocks):
            self.control_pooled = pool(self.rounds("base"), self.rounds("control"), tolerance)

    @property
    def in_family(self) -> bool:
        """Measured cleanly: an error or a foreign process says nothing about the code."""
        return not self.error and not self.foreign_processes and self.pooled is not None

    @property
    def judged(self) -> tuple[str, str | None]:
        if self.error:
            return "error", "a side failed: not in Holm's family"
        if self.foreign_processes:
            return "disturbed", "other processes on the GPU: not in Holm's family; re-run on a quiet machine"
        if self.pooled is None:
            return Change.INCONCLUSIVE.value, "no rounds"
        return verdict_of(self.pooled, self.control_pooled, self.holm_rejected, self.holm_family)

    @property
    def verdict(self) -> str:
        return self.judged[0]

    @property
    def block_changes(self) -> dict:
        return {change.value: sum(b.change == change.value for b in self.blocks) for change in Change}


def decide(cases: list[AbCase]) -> None:
    """Holm over the cases measured cleanly; `slower` only where it rejects. Called after every
    block (provisional: the cases so far) and once more after the last case (final)."""
    family = [case for case in cases if case.in_family]
    rejected = holm_over([case.pooled.p_slower for case in family])
    for case in cases:
        case.holm_family, case.holm_rejected = 0, False
    for case, reject in zip(family, rejected):
        case.holm_family, case.holm_rejected = len(family), reject


def foreign_processes(seen: list[dict], ours: set[int]) -> list[dict]:
    """GPU processes that are neither side. In a container NVML may name host PIDs that our
    /proc does not show ("verified": False): each of our two workers may hide behind one."""
    others = [p for p in seen if p.get("pid") not in ours]
    unverified = [p for p in others if not p.get("verified", True)]
    hidden_workers = len(ours) - sum(1 for p in seen if p.get("pid") in ours)
    if any(p.get("verified", True) for p in others) or len(unverified) > hidden_workers:
        return others
    return []


# Three sides: ABC CBA ACB BAC CAB BCA. Over each cycle of 18 rounds every side holds each place
# twice (linear drift cancels) and follows each side, itself included, exactly twice. ABC CBA alone
# never ran the head right after itself while base and control did (one H100 read A vs A at
# 512x512@6 with the head 0.2-0.3 % slow in every block, a possible consequence).
_THREE_SIDES = ((0, 1, 2), (2, 1, 0), (0, 2, 1), (1, 0, 2), (2, 0, 1), (1, 2, 0))


def interleaved_order(pairs: int, sides: tuple[str, ...] = ("base", "head")) -> list[tuple[str, ...]]:
    """ABBA ABBA ... for two sides: each goes first as often as last and follows itself as often
    as the other, so linear drift and what a round leaves to the next cancel in the comparison.
    Three sides (a control) cycle through the six orders of _THREE_SIDES for the same."""
    if len(sides) == 3:
        return [tuple(sides[j] for j in _THREE_SIDES[i % 6]) for i in range(pairs)]
    return [tuple(sides) if i % 2 == 0 else tuple(reversed(sides)) for i in range(pairs)]


def pairs_for(round_s: float, sides: int, block_seconds: float, minimum: int = MIN_PAIRS,
              maximum: int = MAX_PAIRS) -> int:
    """Pairs that fill `block_seconds` of rounds on every side: a short case gets more pairs for
    the same minute. H100, fast: single rounds spread 2-4 % at 512x512@6, where resampling the
    measured pairs calls a 2 % plant slower in 35 % of 10-pair blocks and 96 % of 60-pair ones;
    at 1024x1024@8, 10 pairs call it slower in 95 % (docs/measurement.md)."""
    if not (round_s > 0 and math.isfinite(round_s)):
        raise AbError(f"round time {round_s!r} s: cannot size the blocks from it")
    return max(minimum, min(maximum, math.ceil(block_seconds / (sides * round_s))))


def prepare_case(case: AbCase, workers: dict[str, Worker], sources: dict[str, Path], request: dict,
                 pairs: int | None, block_seconds: float, log: Callable[[str], None]) -> None:
    """Build and warm every side, one at a time on an otherwise idle GPU: warm-up decides when a
    case is steady, and the planted slow-down sizes itself from a warm step (measured on the
    H100: built at once, the plant calibrated on a shared GPU and came out 3x too big)."""
    started = time.monotonic()
    readiness: dict[str, dict] = {}
    for side, worker in workers.items():
        log(f"{side}: preparing {case.stack} at {case.scenario} from {sources[side]}")
        readiness[side] = worker.ask(cmd="prepare", stack=case.stack, scenario=case.scenario, **request[side])
    case.base, case.head, case.control = readiness["base"], readiness["head"], readiness.get("control")
    prints = {side: ready.get("fingerprint") for side, ready in readiness.items()}
    if len(set(prints.values())) > 1:
        raise AbError(f"the sides built different weights: {prints}")
    case.prepare_s = time.monotonic() - started
    warm = [ready["warmup_s"][-1] for ready in readiness.values() if ready.get("warmup_s")]
    round_s = statistics.median(warm) if warm else float("nan")
    case.pairs = pairs or pairs_for(round_s, len(workers), block_seconds)
    if not pairs:
        log(f"{case.stack} {case.scenario}: {case.pairs} pairs a block (~{block_seconds:.0f} s of rounds at "
            f"{round_s:.3f} s a round, {len(workers)} sides)")


def timed_block(workers: dict[str, Worker], pairs: int, tolerance: float) -> Block:
    from ..instrument.host import HostPressure

    walls: dict[str, list[float]] = {side: [] for side in workers}
    started, pressure = time.monotonic(), HostPressure()
    for order in interleaved_order(pairs, tuple(workers)):
        for side in order:
            walls[side].append(_round_seconds(side, workers[side].ask(cmd="round")))
    block = judge_block(walls, time.monotonic() - started, tolerance)
    block.host_cpu_stall, block.host_cpu_steal = pressure.stall_fraction(), pressure.steal_fraction()
    return block


def _round_seconds(side: str, reply: dict) -> float:
    """A side's round as a positive, finite time; anything else is that side's broken timing, an error
    of the case (exit 3), never ranked into the pairs (a NaN ended the whole A/B in a traceback, exit 1)."""
    wall = reply.get("wall_s")
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not math.isfinite(wall) or wall <= 0:
        raise AbError(f"the {side} side reported a round of {wall!r} s: not a time; its timing is broken")
    return float(wall)


def host_contention(block: Block) -> str | None:
    """The host's CPU contention during a block, in the gate's words, when over the suite's
    thresholds (instrument/host.py). Each pair's sides run back to back and share it, so it widens
    the interval rather than biasing it: said, not a verdict."""
    from ..gate.latency import describe_disturbance
    from ..instrument.host import host_flags

    stall, steal = block.host_cpu_stall, block.host_cpu_steal
    return "; ".join(describe_disturbance(host_flags(stall, steal), [], None, None, stall, steal)) or None


def measure_case(case: AbCase, workers: dict[str, Worker], blocks: int, tolerance: float, gpu: int | None,
                 log: Callable[[str], None], after_block: Callable[[], None]) -> None:
    """The case's blocks, with NVML watching the workers' card for foreign processes."""
    from ..instrument.telemetry import TelemetrySampler

    ours = {ready["pid"] for ready in (case.base, case.head, case.control) if ready}
    sampler = TelemetrySampler(gpu, 0.1) if gpu is not None else None
    if sampler:
        sampler.start()
    try:
        for number in range(blocks):
            block = timed_block(workers, case.pairs, tolerance)
            case.blocks.append(block)
            case.pool_blocks(tolerance)
            shown = f"; control/base {block.control['ratio']:.4f} {block.control['change']}" if block.control else ""
            contention = host_contention(block)
            shown += f"; host busy: {contention} (shared by both sides of each pair: a wider interval)" \
                if contention else ""
            log(f"{case.stack} {case.scenario} block {number + 1}/{blocks}: head/base {block.ratio:.4f} "
                f"({block.ratio_low:.4f}-{block.ratio_high:.4f}) {block.change}{shown}; all "
                f"{case.pooled.pairs} pairs {case.pooled.ratio:.4f} ({case.pooled.low:.4f}-{case.pooled.high:.4f})")
            after_block()
    finally:  # a run cut short keeps its blocks: they keep what NVML saw over them too
        report = sampler.stop() if sampler else None
        if report is not None:
            case.foreign_processes = foreign_processes(report.other_processes, ours)
            summary = report.summary()
            case.card = {"flags": [f for f in report.flags() if f != "other-processes"],
                         "sm_clock_mhz": (summary.get("sm_clock_mhz") or {}).get("median"),
                         "temperature_c_max": (summary.get("temperature_c") or {}).get("max")}


def run_ab(base: Path, head: Path, cases: list[tuple[str, str]], *, pairs: int | None = None,
           blocks: int = 1, block_seconds: float = BLOCK_SECONDS, tolerance: float = 0.01, model: str | None = None,
           device: str = "cuda", inject: dict | None = None, log: Callable[[str], None] = print, pin: bool = True,
           control: float | None = None,
           on_block: Callable[[list[AbCase]], None] = lambda cases: None) -> list[AbCase]:
    """A/B every (stack, scenario id) of `cases`, in that order; `inject` = {"base": fraction, "head": fraction} plants a
    slow-down on a side (to prove the gate); `control` adds the head's code with that planted
    slow-down as a third side (module docstring). `on_block` sees the cases after every block,
    provisionally decided (to keep the rounds on disk if the run is cut short); the cases come
    back decided over all of them."""
    base, head = check_checkout(base, "base"), check_checkout(head, "head")
    check_tolerance(tolerance)
    check_plan(pairs, blocks, block_seconds, control, tolerance)
    check_inject(inject)
    gpu = telemetry_index(device)
    sources = {"base": base, "head": head, **({"control": head} if control else {})}
    planted = {**(inject or {}), **({"control": control} if control else {})}
    request = {side: {"model": model, "device": device, "inject_slowdown": planted.get(side)} for side in sources}
    worker_cores, before = None, None
    if pin and hasattr(os, "sched_setaffinity"):
        # Host-bound rounds moved with the scheduler's choice of core (512: single rounds 5-10 % slow).
        before = os.sched_getaffinity(0)
        worker_cores, own = split_cores(before)
        os.sched_setaffinity(0, own)
        log(f"workers pinned to cores {worker_cores}, this process to {own}")
    workers = {side: Worker(side, path, log, worker_cores) for side, path in sources.items()}
    results: list[AbCase] = []

    def after_block() -> None:
        decide(results)
        on_block(results)

    try:
        for stack, scenario in cases:
            case = AbCase(stack, scenario, {}, {})
            results.append(case)
            try:
                prepare_case(case, workers, sources, request, pairs, block_seconds, log)
                measure_case(case, workers, blocks, tolerance, gpu, log, after_block)
            except AbError as error:
                case.error = str(error)
                log(f"{stack} {scenario}: ERROR {error}")
    finally:
        for worker in workers.values():
            worker.close()
        if before is not None:
            os.sched_setaffinity(0, before)
    decide(results)
    return results
