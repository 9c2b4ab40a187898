"""`flux-perf calibrate`: measure the lossless band and each stack's spread for these weights on
this GPU (gate/calibrate.py), print the proposal, and store it with --write, scenario by scenario
(a run cut short keeps the scenarios it finished). `--restate FOLDER` re-proposes stored ones."""

from __future__ import annotations

import sys
from pathlib import Path

from ..suite.config import ConfigError, typed_path
from .shared import add_model_args, add_scenario_args, progress, scenarios_of, suite
from ..suite.values import named


def register(sub) -> None:
    parser = sub.add_parser("calibrate", help="measure the lossless band and fidelity spread for these weights "
                                              "on this GPU; propose it, write it with --write")
    add_scenario_args(parser)
    parser.add_argument("--lossless", default=None,
                        help="exact-math variants of bf16 (default on a GPU: attn-cudnn,attn-flash-sdpa,"
                             "attn-efficient,compile-regional)")
    parser.add_argument("--stacks", default=None, help="stacks whose spread to measure (default: compile,fp8,fast)")
    parser.add_argument("--breaks", default=None, help="planted breaks to locate (default: noise:0.01,wrong-shift)")
    parser.add_argument("--repeats", type=int, default=2, help="fresh builds per stack (default 2)")
    parser.add_argument("--cold-compiles", action="store_true",
                        help="compile every stack build from scratch (no dynamo state, inductor caches off), so "
                             "the spread includes the compiler's own choices, as on another machine; slower")
    parser.add_argument("--margin", type=float, default=1.5,
                        help="the band reaches this many times the farthest lossless variant (default 1.5)")
    parser.add_argument("--write", action="store_true", help="store the proposal in the baseline store")
    parser.add_argument("--force", action="store_true", help="allow --write under CI")
    parser.add_argument("--json", type=named, default=None, help="write every measurement and the proposal here")
    parser.add_argument("--restate", type=named, default=None, metavar="FOLDER",
                        help="no measuring: re-propose the calibrations stored in this baseline folder "
                             "from the distances they hold (for a new --margin or band rule)")
    add_model_args(parser, timed=False)
    # What --restate (which measures nothing) refuses beside it: every option but its own, at its default.
    own = {"restate", "margin", "write", "force"}
    defaults = vars(parser.parse_args([]))
    parser.set_defaults(func=run, measuring_defaults={name: value for name, value in defaults.items()
                                                      if name not in own})


def listed(text: str | None, default) -> list[str]:
    return [s for s in (text.split(",") if text is not None else default) if s]


def check_lists(args) -> None:
    """--lossless '', --breaks '', --stacks '' (an unset "$VAR"): a usage error, as `--stacks ''` is for
    every command; read as none, they placed a band without its variants or separation check."""
    for option in ("lossless", "stacks", "breaks"):
        text = getattr(args, option)
        if text is not None and not listed(text.replace(" ", ""), ()):
            raise ConfigError(f"--{option} {text!r}: names no {option[:-1] if option != 'lossless' else 'variant'}; "
                              f"name one or more, or leave --{option} out for the default")


def check_restate_options(args) -> None:
    """--restate measures nothing and reads its folder whole: an option of measuring given with it
    (--json, --scenarios, --lossless, --model, ...) would be ignored without a word."""
    given = [f"--{name.replace('_', '-')}" for name, default in args.measuring_defaults.items()
             if getattr(args, name) != default]
    if given:
        raise ConfigError(f"--restate {args.restate} with {', '.join(given)}: --restate measures nothing and "
                          "re-proposes every calibration stored in its folder; it takes only --margin, --write "
                          "and --force")


def calibrate_scenarios(runner, store, machine, scenarios, *, lossless=None, stacks=None, breaks=None, repeats=2,
                        margin=1.5, cold_compiles=False, write=False, force=False,
                        json_path=None) -> tuple[dict, list[str], list[str]]:
    """Calibrate each scenario in turn, writing each as it finishes when `write`; return the entries,
    what failed variants left out (a scenario whose band lacks a variant, or that tells no break
    from the lossless variants, is never written) and the stacks this machine could not measure."""
    from ..gate.calibrate import calibrate_scenario, format_calibration
    from ..store.baselines import BaselineKey
    from ..store.files import write_json

    lossless, stacks, breaks, problems, unmeasured = _runnable_variants(machine, lossless, stacks, breaks, write)
    driver = machine.gpu.driver_version if machine.gpu else None
    report = {}

    def save(**more) -> None:
        if json_path:
            key = BaselineKey(machine.slug, machine.fingerprint, "")
            write_json(Path(json_path), {"flux_perf_calibration": 2, "key": str(key.folder), "scenarios": report,
                                         **more})

    try:
        for number, scenario in enumerate(scenarios, 1):
            key = BaselineKey(machine.slug, machine.fingerprint, scenario.id, machine.gpu_name)
            progress(f"[{number}/{len(scenarios)}] calibrating {key}: {len(lossless) + 1} lossless, {len(stacks)} "
                     f"stacks x {repeats}, {len(breaks)} breaks")
            result = calibrate_scenario(runner, store, key, scenario, lossless=lossless, stacks=stacks,
                                        breaks=breaks, repeats=repeats, margin=margin, log=progress,
                                        cold_compiles=cold_compiles)
            print(format_calibration(result))
            entry = result.entry(driver)
            report[scenario.id] = entry.to_json()
            problem = _incomplete(result, scenario.id, write)
            if problem:
                problems.append(problem)
                print(f"incomplete calibration: {problem}", file=sys.stderr)
            save(incomplete=problems, not_measured=unmeasured)
            if write and not result.refused():
                _store(store, key, entry, force)
    except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM: the finished scenarios stay, marked
        from ..suite import interrupts

        cut = f"interrupted by {interrupts.describe(error)}: {len(report)} of {len(scenarios)} scenarios finished"
        save(interrupted=cut, incomplete=problems, not_measured=unmeasured)
        progress(cut + (f" (kept in {json_path})" if json_path else ""))
        raise
    return report, problems, unmeasured


def _runnable_variants(machine, lossless, stacks, breaks, write: bool):
    """The lossless variants, stacks and breaks this machine runs, and the problem of a band placed
    without an exact-math variant or break that cannot run here (--write refuses it up front)."""
    from ..components.stacks import BASELINE, DEFAULT_STACKS
    from ..gate.calibrate import BREAKS, LOSSLESS_CPU, LOSSLESS_CUDA, runnable

    lossless, skipped = runnable(listed(lossless, LOSSLESS_CUDA if machine.cuda else LOSSLESS_CPU), machine.caps)
    stacks, more = runnable(listed(stacks, [s for s in DEFAULT_STACKS if s != BASELINE]), machine.caps)
    breaks, rest = runnable(listed(breaks, BREAKS), machine.caps)
    for line in skipped + more + rest:
        print(f"not measured: {line}", file=sys.stderr)
    if not (skipped or rest):  # a stack that cannot run only lacks its spread: the band alone, stricter
        return lossless, stacks, breaks, [], more
    unrun = "; ".join(skipped + rest)
    if write:
        raise ConfigError(f"cannot run here: {unrun}. The band would be placed without them, so no calibration "
                          "is written; to place it with what runs here: flux-perf calibrate --write "
                          f"--lossless {','.join(lossless)} --breaks {','.join(breaks)}")
    problem = f"not usable: the band leaves out what cannot run here ({unrun})"
    print(f"incomplete calibration: {problem}", file=sys.stderr)
    return lossless, stacks, breaks, [problem], more


def _incomplete(result, scenario: str, write: bool) -> str | None:
    """What a failed variant left out of this scenario's calibration, or None. A band that tells no
    break from the lossless variants is as unusable in a dry proposal as under --write."""
    refused = f"{scenario}: not {'written' if write else 'usable'}"
    if result.unusable():
        return f"{refused}: {result.unusable()}; run it again"
    if result.unseparated():
        return f"{refused}: {result.unseparated()}"
    if result.spreads_missing():
        return (f"{scenario}: no build-to-build spread for {', '.join(result.spreads_missing())}: the gate allows "
                "them the band alone (stricter); run it again to measure them")
    return None


def _store(store, key, entry, force: bool) -> None:
    from ..store.entries import BaselineError

    try:
        old = store.table(key, "calibration.json").get("fidelity")
    except BaselineError as error:
        print(f"{key}: replacing an unusable calibration ({error})")
        old = None
    path = store.write_calibration(key, entry, force=force)
    before = f"band SSIM {old.band.ssim:.5f} -> " if old else "new: band SSIM "
    print(f"{key}: {before}{entry.band.ssim:.5f} ({path})")


def run(args) -> int:
    from ..components.stacks import BASELINE
    from ..instrument.machine import Machine
    from ..instrument.runner import CaseRunner
    from ..model.models import resolve_model_source
    from ..store.baselines import BaselineStore, updates_allowed

    if args.write:
        updates_allowed(args.force, "--force (flux-perf calibrate --write --force)")  # before minutes of measuring
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: must be >= 1")
    if not args.margin >= 1:
        raise ConfigError(f"--margin {args.margin}: must be >= 1 (the band reaches that many times the farthest "
                          "lossless variant)")
    if args.restate:
        check_restate_options(args)
        return restate(args)
    check_lists(args)
    if args.json:
        from ..suite.config import check_writable_dir

        args.json = str(typed_path(args.json))  # named absolute in every message, as --report-dir
        check_writable_dir(Path(args.json).parent, "--json folder")  # before minutes of measuring
    config = suite(args, stacks=BASELINE, scenarios=scenarios_of(args))
    machine = Machine.detect(config.device, resolve_model_source(config.model, config.device))
    store = BaselineStore(config.baselines_dir)
    if args.write:  # a broken calibration.json or a read-only folder: said before minutes of measuring
        store.check_update(machine.slug, machine.fingerprint)
    runner = CaseRunner(machine.source, config.device, log=lambda m: progress("  " + m))
    _, problems, unmeasured = calibrate_scenarios(runner, store, machine, config.scenarios, lossless=args.lossless,
                                      stacks=args.stacks, breaks=args.breaks, repeats=args.repeats, margin=args.margin,
                                      cold_compiles=args.cold_compiles, write=args.write, force=args.force,
                                      json_path=args.json)
    if args.json:
        print(f"\nmeasurements and proposal: {args.json}")
    if not args.write:
        print("\nnothing written: add --write to store this proposal for these weights on this GPU")
    if problems:
        return 1
    if unmeasured:  # its spread not measured: the gate allows it the band alone; not judged, never 0
        from ..report.judged import EXIT_NOT_JUDGED

        print(f"\nexit {EXIT_NOT_JUDGED}: no build-to-build spread for what this machine cannot run "
              f"({'; '.join(unmeasured)}): measure it where it runs", file=sys.stderr)
        return EXIT_NOT_JUDGED
    return 0


def restate(args) -> int:
    """Re-propose each stored calibration of a baseline folder from the distances it holds, print
    it, and write it back only with --write."""
    from dataclasses import replace

    from ..gate.calibrate import format_calibration, restated
    from ..model.scenarios import parse_scenario
    from ..store.baselines import BaselineKey, BaselineStore
    from ..store.entries import BaselineError
    from ..suite.hints import record_command

    folder = typed_path(args.restate)
    path = folder / "calibration.json"
    if not path.is_file():
        raise ConfigError(f"--restate {folder}: no calibration.json there (a baseline folder: "
                          "<baselines>/<gpu>/<model fingerprint>)")
    store = BaselineStore(folder.parent.parent)
    problems = []
    for scenario_id, inner, old in store.listing(folder, "calibration.json"):  # read and checked whole
        if isinstance(old, BaselineError):
            raise old
        if inner != "fidelity":
            continue
        key = BaselineKey(folder.parent.name, folder.name, scenario_id)
        again = record_command("calibrate --write", baselines_dir=folder.parent.parent, stacks=sorted(old.spread),
                               scenarios=(scenario_id,))  # every spread it holds, into this folder
        result = restated(old, parse_scenario(scenario_id), args.margin, again)
        print(format_calibration(result))
        if result.refused():  # a missing spread restates as stored
            problems.append(_incomplete(result, scenario_id, args.write))
            print(f"incomplete calibration: {problems[-1]}", file=sys.stderr)
        elif args.write:
            new = result.entry(old.provenance.driver)
            entry = replace(new, stacks=old.stacks, spread=old.spread, provenance=old.provenance, details={
                **new.details, "restated_from": {"recorded_at": old.provenance.recorded_at,
                                                 "band": old.band.__dict__}})
            store.write_calibration(key, entry, force=args.force)
            print(f"{key}: band SSIM {old.band.ssim:.6f} -> {result.band['ssim']:.6f} ({path})")
    if not args.write:
        print("\nnothing written: add --write to store the restated proposal")
    return 1 if problems else 0
