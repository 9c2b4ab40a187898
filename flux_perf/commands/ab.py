"""`flux-perf ab` (the interleaved A/B gate of a pull request) and `flux-perf ab-pairs` (how
often runs of n pairs call each verdict, from measured rounds)."""

from __future__ import annotations

import sys
from pathlib import Path

from .shared import command_line, progress
from ..suite.values import named


def register(sub) -> None:
    pairs = sub.add_parser("ab-pairs", help="from `ab --json` files: how often a run or block of n pairs calls "
                                            "each verdict")
    pairs.add_argument("files", nargs="+")
    pairs.add_argument("--sizes", default="6,8,10,12,16,20",
                       help="resampling: pairs per block to try (default 6,8,10,12,16,20)")
    pairs.add_argument("--tolerance", type=float, default=0.01)
    pairs.add_argument("--draws", type=int, default=400, help="resampling: blocks drawn per size (default 400)")
    pairs.add_argument("--runs", default=None, metavar="N,N,...",
                       help="no resampling: cut each file's rounds into disjoint consecutive runs of N pairs and "
                            "judge each as `ab` judges a run (all its pairs, Holm); also old rule against pooled "
                            "as recorded blocks are added")
    pairs.add_argument("--family", type=int, default=None, metavar="K",
                       help="with --runs: Holm over K cases, the file's own plus unchanged ones (default: the "
                            "file's cases; the pull-request job runs 4)")
    pairs.add_argument("--json", type=named, default=None, help="write the counts (or resampled rates) here")
    pairs.set_defaults(func=run_pairs)

    ab = sub.add_parser("ab", help="interleaved A/B of two checkouts on this GPU; exit 1 when head is "
                                    "slower, 6 when a case stays undecided, 3 when a side failed")
    ab.add_argument("--base", type=named, required=True, help="checkout of the base (e.g. main)")
    ab.add_argument("--head", type=named, required=True, help="checkout of the change")
    ab.add_argument("--stacks", default=None,
                    help="comma-separated stacks (default: bf16,fast; none with --undecided-from alone)")
    ab.add_argument("--scenarios", default=None,
                    help="comma-separated HxW@STEPS (default: 512x512@6,1024x1024@8; none with --undecided-from alone)")
    ab.add_argument("--undecided-from", type=named, default=None, metavar="RESULTS",
                    help="a suite run's results.json: also A/B every case its latency gate left INCONCLUSIVE or "
                         "DISTURBED, and exit 6 if it left anything else unjudged that an A/B cannot decide (a "
                         "fidelity gap, no reference, a case not run)")
    ab.add_argument("--pairs", type=int, default=None,
                    help="interleaved pairs of rounds per verdict (default: enough for --block-seconds, at least 10)")
    ab.add_argument("--block-seconds", type=float, default=60.0,
                    help="without --pairs: seconds of rounds per block, all sides together (default 60); a short "
                         "case gets more pairs, since its rounds spread more")
    ab.add_argument("--blocks", type=int, default=1,
                    help="blocks of pairs per case on the same warm workers (default 1); the verdict pools every "
                         "block's pairs, so more blocks only add power")
    ab.add_argument("--tolerance", type=float, default=0.01,
                    help="head/base change treated as noise (default 0.01); slower "
                         "needs Holm's correction over the run's cases")
    ab.add_argument("--model", type=named, default=None, help="as for `run` (default: synthetic)")
    ab.add_argument("--device", type=named, default=None, help="cuda or cuda:N (default: cuda)")
    ab.add_argument("--json", type=named, default=None, help="write every round and verdict here")
    ab.add_argument("--no-pin", action="store_true",
                    help="leave the workers unpinned (default: both on the same few cores, this process on the rest)")
    ab.add_argument("--base-inject-slowdown", type=float, default=None, metavar="FRACTION",
                    help="test-only: plant a slow-down on the base side")
    ab.add_argument("--head-inject-slowdown", type=float, default=None, metavar="FRACTION",
                    help="test-only: plant a slow-down on the head side (proves the gate)")
    ab.add_argument("--control", type=float, default=None, metavar="FRACTION",
                    help="a positive control: a third worker runs the head's code with this slow-down planted "
                         "(e.g. 0.02 of the whole warm round), interleaved with the others; a case whose pairs do "
                         "not see it slower says inconclusive instead of same. Costs half as many rounds again")
    ab.set_defaults(func=run)


def run(args) -> int:
    from ..ab.orchestrator import check_inject, check_tolerance, run_ab
    from ..ab.output import cases_to_json, format_cases
    from ..model.pipeline import check_device
    from ..suite.config import check_writable_dir, typed_path
    from ..store.files import write_json

    check_tolerance(args.tolerance)
    inject = {"base": args.base_inject_slowdown, "head": args.head_inject_slowdown}
    check_inject(inject)
    check_device(args.device or "cuda")  # before three workers start and fail each case on it
    wanted, undecidable, model, failed = ab_cases(args)
    check_runnable(wanted, args.device or "cuda")  # before workers spend minutes building what cannot run
    check_same_gpu(args.undecided_from, args.device or "cuda")
    settings = {"base": args.base, "head": args.head, "pairs": args.pairs or "auto",
                "block_seconds": None if args.pairs else args.block_seconds, "blocks": args.blocks, "pinned": not args.no_pin,
                "tolerance": args.tolerance, "inject": inject, "control": args.control,
                "command": command_line()}

    json_path = typed_path(args.json) if args.json else None  # named absolute in every message, as --report-dir
    measured: list = []  # the cases as of the last block
    # In every write: a CI step reading only the file sees why the exit is 6 beside verdicts all decided.
    not_decidable = [item.to_json() for item in undecidable]

    def save(cases, final: bool, **more) -> None:  # after every block: a run cut short keeps its rounds
        measured[:] = cases
        if json_path:
            write_json(json_path, {**cases_to_json(cases, settings, final, not_decidable), **more})

    if json_path:
        check_writable_dir(json_path.parent, "--json folder")
    if not wanted:
        print("nothing to A/B: no --stacks/--scenarios, and the suite run left no latency verdict undecided")
        save([], final=True)
        return ab_exit([], undecidable, failed)
    try:
        cases = run_ab(Path(args.base), Path(args.head), wanted, pairs=args.pairs, blocks=args.blocks,
                       block_seconds=args.block_seconds,
                       tolerance=args.tolerance, model=model, device=args.device or "cuda", inject=inject,
                       log=progress, pin=not args.no_pin, control=args.control,
                       on_block=lambda cases: save(list(cases), final=False))
    except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM: the blocks measured so far stay, marked
        from ..suite import interrupts

        done = [case for case in measured if case.blocks]
        cut = f"interrupted by {interrupts.describe(error)}: {len(done)} of {len(wanted)} cases measured"
        save(done, final=False, interrupted=cut)
        progress(cut + (f" (kept in {json_path})" if json_path else ""))
        raise
    save(cases, final=True)
    print(format_cases(cases, args.tolerance))
    if json_path:
        print(f"\nA/B rounds and verdicts: {json_path}")
        from ..report.plots import plot_ab

        data = cases_to_json(cases, settings, True, not_decidable)
        picture(lambda path: plot_ab(data, path), picture_path(json_path))
    return ab_exit(cases, undecidable, failed)


def picture_path(written: Path) -> Path:
    """The picture beside the --json file; a --json named *.png is never overwritten by it."""
    return written.with_suffix(".png") if written.suffix != ".png" else written.with_name(written.name + ".png")


def picture(draw, path: Path, what: str = "A/B blocks") -> None:
    """`draw(path)` beside the --json file; a picture that fails is one line, the verdicts stand."""
    try:
        if draw(path):
            print(f"{what}, pictured: {path}")
    except Exception as error:  # noqa: BLE001 - a plot must never change the A/B's outcome
        print(f"no picture of the {what} ({type(error).__name__}: {error})", file=sys.stderr)


def ab_cases(args) -> tuple[list[tuple[str, str]], list, str | None, list[str]]:
    """The (stack, scenario) cases to A/B: --stacks x --scenarios, then the cases the suite run of
    --undecided-from left INCONCLUSIVE; what that run left unjudged that no A/B can decide; the
    model to measure (--model, else the one that run measured); and what that run failed."""
    from ..ab.orchestrator import check_cases
    from ..components.stacks import parse_stacks
    from ..model.scenarios import parse_scenarios

    explicit = args.stacks is not None or args.scenarios is not None or args.undecided_from is None
    stacks = parse_stacks("bf16,fast" if args.stacks is None else args.stacks)
    scenarios = parse_scenarios("512x512@6,1024x1024@8" if args.scenarios is None else args.scenarios)
    cases = [(stack.name, scenario.id) for stack in stacks for scenario in scenarios] if explicit else []
    if args.undecided_from is None:
        return cases, [], args.model, []
    from ..report.judged import not_judged_in, pending
    from ..report.records import read_results

    results = read_results(args.undecided_from)
    _check_gate_run(results, args.undecided_from)
    unjudged = not_judged_in(results)
    model = args.model if args.model is not None else _model_of(results, args.undecided_from)
    # What the suite already failed (--flux-strict) is not re-measured, but still never exit 0.
    to_ab = [item for item in pending(unjudged) if item.resolvable_by_ab]
    check_cases([(item.case_id, item.stack, item.scenario) for item in to_ab], f"--undecided-from {args.undecided_from}")
    undecided = [(item.stack, item.scenario) for item in to_ab]
    cases += [case for case in undecided if case not in cases]
    progress(f"{args.undecided_from}: {len(undecided)} case(s) whose latency the suite left undecided or disturbed, to A/B"
             + (f" ({', '.join(f'{s}-{c}' for s, c in undecided)})" if undecided else ""))
    if results.not_selected:  # a partial gate run: this A/B's verdict does not cover them either
        from ..report.summary import not_selected_text

        progress(f"{args.undecided_from}: {not_selected_text(results.not_selected)}")
    return (cases, [item for item in unjudged if item not in to_ab] + _cases_not_run(results), model,
            _suite_failures(results))


def _suite_failures(results) -> list[str]:
    """The cases the suite run failed on a verdict (a FAIL, an error): an A/B of other cases does not
    clear them, so the A/B's exit is 1 with them. What it failed unjudged is listed as not decidable."""
    return [f"{record.id}: {', '.join(record.failures(unjudged=False))}" for record in results.records
            if record.failures(unjudged=False)]


def check_runnable(wanted: list[tuple[str, str]], device: str) -> None:
    """Every stack to A/B runs on this machine: one message naming each that cannot and why, not
    an ERROR per case from inside the workers (compile on a CPU, fp8 on a GPU before Ada)."""
    from ..components import Capabilities
    from ..gate.calibrate import runnable
    from ..suite.config import ConfigError

    _, unmet = runnable(list(dict.fromkeys(stack for stack, _ in wanted)), Capabilities.detect(device))
    if unmet:
        raise ConfigError(f"cannot A/B here: {'; '.join(unmet)}")


def check_same_gpu(path: str | None, device: str) -> None:
    """The suite's undecided cases are A/B-tested on the GPU model it measured them on: on another card
    (or the CPU) the A/B would clear a case with rounds that card never ran."""
    from ..instrument.machine import Machine
    from ..report.judged import not_judged_in, pending
    from ..report.records import read_results
    from ..suite.config import ConfigError

    results = read_results(path) if path else None
    undecided = {item.case_id for item in pending(not_judged_in(results)) if item.resolvable_by_ab} if results else ()
    measured = sorted({record.gpu or "a CPU" for record in results.records if record.id in undecided}) if undecided else []
    here = (Machine.gpu_name_on(device) or "a CPU") if measured else None
    if measured and measured != [here]:
        raise ConfigError(f"--undecided-from {path} measured its undecided cases on {', '.join(measured)}; this A/B "
                          f"would run them on {here} (--device {device}): run it on the suite's GPU model")


def _cases_not_run(results) -> list:
    """A run cut short, or one that holds no case, judged less than its file shows: never 'nothing to A/B', 0."""
    from ..report.judged import NotJudged, Unjudged

    if results.interrupted:
        return [NotJudged("the rest of the run", "", "", Unjudged.NOT_RUN, results.interrupted, False)]
    if not (results.records or results.skipped):
        return [NotJudged("every case", "", "", Unjudged.NOT_RUN, "the results file holds no case", False)]
    return []


def _check_gate_run(results, path: str) -> None:
    """Only a pytest run's verdicts say what was left undecided: a `flux-perf run` or a baseline update
    judges nothing for the gate, so its file would read as 'nothing to A/B', exit 0. An update (either
    front end) says so in its records: latency `recorded`, fidelity `updated`, and its written lines."""
    from ..suite.config import ConfigError

    recorded = [r.id for r in results.records if (r.latency and r.latency.verdict == "recorded")
                or (r.fidelity and r.fidelity.verdict == "updated")]
    if recorded or results.baseline_updates:
        raise ConfigError(f"--undecided-from {path} is a baseline update's (`{results.command}`: it recorded "
                          f"{', '.join(recorded) or 'references'}), not the gate's: it judged nothing; pass the "
                          "results.json of a `pytest -m h100` run (its --flux-report-dir)")
    if results.command and results.command.startswith("flux-perf "):
        raise ConfigError(f"--undecided-from {path} was written by `{results.command}`, not by the gate: pass "
                          "the results.json of a `pytest -m h100` run (its --flux-report-dir)")


def _model_of(results, path: str) -> str | None:
    """The --model text of the weights a suite run measured (None: its records hold none)."""
    from ..suite.config import ConfigError
    from ..model.models import label_to_spec

    labels = sorted({record.model for record in results.records})
    if len(labels) > 1:
        raise ConfigError(f"--undecided-from {path} holds cases of several models ({', '.join(labels)}): "
                          "name the one to A/B with --model")
    return label_to_spec(labels[0]) if labels else None


def ab_exit(cases, undecidable: list, suite_failed: list[str] = ()) -> int:
    """3: a side failed or the GPU was shared; 1: head slower, or the suite run failed a case; 6:
    nothing slower, but a case was not decided (an A/B inconclusive, or unjudged by the suite and
    beyond an A/B); 0: all decided."""
    from ..report.judged import EXIT_NOT_JUDGED

    if suite_failed:
        print("\nFailed by the suite run (an A/B does not clear a failure; exit 1 unless a worse one applies):")
        print("\n".join(f"  {line}" for line in suite_failed))

    if undecidable:
        print(f"\nNot judged by the suite, and an A/B cannot decide it (exit {EXIT_NOT_JUDGED} unless a worse "
              "one applies):")
        print("\n".join(f"  {item.line()}" for item in undecidable))
    if any(case.verdict in ("error", "disturbed") for case in cases):
        return 3  # not a verdict on the code: re-run on a quiet machine
    if suite_failed or any(case.verdict == "slower" for case in cases):
        return 1
    undecided = [f"{case.stack}-{case.scenario}" for case in cases if case.verdict == "inconclusive"]
    if undecided:
        # Each re-run is a new test with its own 2.5 %: re-running until one passes would spend it again.
        print(f"\nexit {EXIT_NOT_JUDGED}: not decided: {', '.join(undecided)}; more pairs decide it (--blocks 2 "
              "or more, on a quiet machine): plan one larger run, do not repeat this one until it passes")
    return EXIT_NOT_JUDGED if undecided or undecidable else 0


def _pair_counts(option: str, text: str) -> list[int]:
    """--sizes / --runs: whole numbers of pairs, at least 2 each."""
    from ..suite.config import ConfigError

    counts = []
    for part in text.split(","):
        try:
            counts.append(int(part))
        except ValueError:
            raise ConfigError(f"{option} {text}: {part.strip()!r} is not a whole number of pairs; write e.g. "
                             f"{option} 6,12") from None
    if any(n < 2 for n in counts):
        raise ConfigError(f"{option} {text}: a {'run' if option == '--runs' else 'block'} needs at least 2 pairs")
    return counts


def run_pairs(args) -> int:
    from ..ab.orchestrator import check_tolerance
    from ..ab.worker import AbError
    from ..suite.config import ConfigError
    from ..ab.pairs import (between_processes, blocks_added, disjoint_runs, files_summary, format_between,
                           format_blocks, format_runs, measured_pairs, read_files, rule_settings, verdict_rates)
    from ..store.files import write_json

    check_tolerance(args.tolerance)
    paths = [Path(path) for path in args.files]
    if args.runs:
        sizes = _pair_counts("--runs", args.runs)
        if args.family is not None and args.family < 1:
            raise ConfigError(f"--family {args.family}: Holm's family holds at least 1 case")
        files = read_files(paths)  # each read and checked once
        runs = disjoint_runs(files, sizes, args.tolerance, args.family)
        added = blocks_added(files, args.tolerance, args.family)
        between = between_processes(files)
        print("\n\n".join([format_runs(runs, sizes, args.tolerance, args.family), format_blocks(added),
                            format_between(between)]))
        result = {"flux_perf_ab_runs": 1, "command": command_line(),
                  "rule": rule_settings(args.tolerance, args.family), "files": files_summary(files),
                  "runs": runs, "blocks_added": added, "between_processes": between}
    else:
        sizes = _pair_counts("--sizes", args.sizes)
        if args.draws < 1:
            raise ConfigError(f"--draws {args.draws}: draw at least 1 block per size (default 400)")
        measured = {path: measured_pairs(path) for path in paths}  # every file checked before any output
        for path, cases in measured.items():
            for case, pairs in cases.items():
                if len(pairs) < 2:
                    raise AbError(f"{path}: {case} has {len(pairs)} measured pair(s): resampling needs at least 2")
        print(f"verdicts of a block of n pairs, resampled {args.draws}x from the measured pairs "
              f"(tolerance {args.tolerance:.0%})")
        result = {}
        for path in paths:
            for case, pairs in measured[path].items():
                rates = verdict_rates(pairs, sizes, args.tolerance, args.draws)
                result.setdefault(str(path), {})[case] = rates
                cells = ", ".join(f"{n}: " + " ".join(f"{change} {share:.0%}" for change, share in rate.items()
                                                      if share) for n, rate in rates.items())
                print(f"{path} {case} ({len(pairs)} pairs): {cells}")
    if args.json:
        write_json(Path(args.json), result)
        if args.runs:
            from ..report.plots import plot_between

            picture(lambda path: plot_between(between, path, args.tolerance), picture_path(Path(args.json)),
                    "A vs A across files")
    return 0
