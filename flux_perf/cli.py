"""`flux-perf`: ad-hoc runs, the list of stacks, baseline updates, calibration, run comparison,
tables, step accounts and the interleaved A/B gate. One module per subcommand in commands/;
this file only builds the parser and dispatches."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .commands import account, baselines, calibrate, compare, run, stacks, table
from .commands.shared import progress as _progress

SUBCOMMANDS = (run, stacks, baselines, calibrate, account, compare, table)


def cmd_ab(args) -> int:
    from .ab import cases_to_json, format_cases, run_ab
    from .report.compare import check_tolerance
    from .config import check_writable_dir
    from .store.files import write_json
    from .model.scenarios import parse_scenarios
    from .components.stacks import parse_stacks

    check_tolerance(args.tolerance)
    stacks = [s.name for s in parse_stacks(args.stacks)]
    scenarios = [s.id for s in parse_scenarios(args.scenarios or "512x512@6,1024x1024@8")]
    inject = {"base": args.base_inject_slowdown, "head": args.head_inject_slowdown}
    settings = {"base": args.base, "head": args.head, "pairs": args.pairs or "auto",
                "block_seconds": None if args.pairs else args.block_seconds, "blocks": args.blocks, "pinned": not args.no_pin,
                "tolerance": args.tolerance, "inject": inject, "control": args.control,
                "command": shlex.join(["flux-perf", *sys.argv[1:]])}

    def save(cases) -> None:  # after every block: a run cut short keeps its rounds
        if args.json:
            write_json(Path(args.json), cases_to_json(cases, settings))

    if args.json:
        check_writable_dir(Path(args.json).parent, "--json folder")
    cases = run_ab(Path(args.base), Path(args.head), stacks, scenarios, pairs=args.pairs, blocks=args.blocks,
                   block_seconds=args.block_seconds,
                   tolerance=args.tolerance, model=args.model, device=args.device or "cuda", inject=inject,
                   log=_progress, pin=not args.no_pin, control=args.control, on_block=save)
    save(cases)
    print(format_cases(cases, args.tolerance))
    if args.json:
        print(f"\nA/B rounds and verdicts: {args.json}")
    if any(case.verdict in ("error", "disturbed") for case in cases):
        return 3  # not a verdict on the code: re-run on a quiet machine
    return 1 if any(case.verdict == "slower" for case in cases) else 0


def cmd_ab_pairs(args) -> int:
    from .ab import measured_pairs, verdict_rates
    from .report.compare import check_tolerance

    check_tolerance(args.tolerance)
    sizes = [int(n) for n in args.sizes.split(",")]
    if any(n < 2 for n in sizes):
        raise ValueError(f"--sizes {args.sizes}: a block needs at least 2 pairs")
    print(f"verdicts of a block of n pairs, resampled {args.draws}x from the measured pairs (tolerance {args.tolerance:.0%})")
    for path in args.files:
        for case, pairs in measured_pairs(Path(path)).items():
            rates = verdict_rates(pairs, sizes, args.tolerance, args.draws)
            cells = ", ".join(f"{n}: " + " ".join(f"{change} {share:.0%}" for change, share in rate.items() if share)
                              for n, rate in rates.items())
            print(f"{path} {case} ({len(pairs)} pairs): {cells}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flux-perf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.register(sub)
    pairs = sub.add_parser("ab-pairs", help="from `ab --json` files: how often a block of n pairs calls each verdict")
    pairs.add_argument("files", nargs="+")
    pairs.add_argument("--sizes", default="6,8,10,12,16,20", help="pairs per block to try (default 6,8,10,12,16,20)")
    pairs.add_argument("--tolerance", type=float, default=0.01)
    pairs.add_argument("--draws", type=int, default=400)
    pairs.set_defaults(func=cmd_ab_pairs)

    ab = sub.add_parser("ab", help="interleaved A/B of two checkouts on this GPU; exit 1 when head is slower")
    ab.add_argument("--base", required=True, help="checkout of the base (e.g. main)")
    ab.add_argument("--head", required=True, help="checkout of the change")
    ab.add_argument("--stacks", default="bf16,fast", help="comma-separated stacks (default: bf16,fast)")
    ab.add_argument("--scenarios", default=None, help="comma-separated HxW@STEPS (default: 512x512@6,1024x1024@8)")
    ab.add_argument("--pairs", type=int, default=None,
                    help="interleaved pairs of rounds per verdict (default: enough for --block-seconds, at least 10)")
    ab.add_argument("--block-seconds", type=float, default=60.0,
                    help="without --pairs: seconds of rounds per block, all sides together (default 60); a short "
                         "case gets more pairs, since its rounds spread more")
    ab.add_argument("--blocks", type=int, default=1,
                    help="independent verdicts per case on the same warm workers (default 1)")
    ab.add_argument("--tolerance", type=float, default=0.01,
                    help="head/base change treated as noise (default 0.01: a 2 %% slow-down is caught)")
    ab.add_argument("--model", default=None, help="as for `run` (default: synthetic)")
    ab.add_argument("--device", default=None, help="cuda or cuda:N (default: cuda)")
    ab.add_argument("--json", default=None, help="write every round and verdict here")
    ab.add_argument("--no-pin", action="store_true",
                    help="leave the workers unpinned (default: both on the same few cores, this process on the rest)")
    ab.add_argument("--base-inject-slowdown", type=float, default=None, metavar="FRACTION",
                    help="test-only: plant a slow-down on the base side")
    ab.add_argument("--head-inject-slowdown", type=float, default=None, metavar="FRACTION",
                    help="test-only: plant a slow-down on the head side (proves the gate)")
    ab.add_argument("--control", type=float, default=None, metavar="FRACTION",
                    help="a positive control: a third worker runs the head's code with this slow-down planted "
                         "(e.g. 0.02), interleaved with the others; a block that does not see it slower says "
                         "inconclusive instead of same. Costs half as many rounds again")
    ab.set_defaults(func=cmd_ab)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .instrument.environment import apply_guide_environment

    args.environment = apply_guide_environment()  # before CUDA initialises
    from .ab import AbError
    from .components import ComponentError
    from .gate.budgets import BudgetsError
    from .model.models import ModelSourceError
    from .model.pipeline import DeviceError
    from .model.scenarios import ScenarioError
    from .report.records import ResultsError
    from .store.entries import BaselineError
    from .config import ConfigError

    try:
        return args.func(args)
    except (ScenarioError, ComponentError, ModelSourceError, DeviceError, BudgetsError, BaselineError,
            ResultsError, ConfigError, AbError, ValueError) as error:
        print(f"flux-perf: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
