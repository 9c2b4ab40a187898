"""`flux-perf baselines update | show | migrate`: record the references on purpose, list them,
convert a store of an older schema.

`update` on a GPU model or weights with nothing recorded is the bootstrap: every selected stack's
references, the bf16 images and latents, and the fidelity calibration of every scenario that has
none, in one command with a progress line per case.
"""

from __future__ import annotations

import sys

from .shared import add_model_args, add_scenario_args, command_line, progress, run_cases, scenarios_of, suite
from ..suite.values import named


def register(sub) -> None:
    baselines = sub.add_parser("baselines", help="the committed references").add_subparsers(dest="action",
                                                                                          required=True)
    update = baselines.add_parser("update", help="re-record the selected stacks' references on purpose (bf16's image "
                                                 "too) and calibrate every scenario that has no calibration")
    update.add_argument("--stacks", default=None,
                        help="comma-separated stacks to re-record (default: bf16,compile,fp8,fast)")
    add_scenario_args(update)
    update.add_argument("--calibrate", choices=("missing", "all", "none"), default="missing",
                        help="fidelity calibration after the references: scenarios without one (default), every "
                             "selected scenario, or none")
    update.add_argument("--missing", action="store_true",
                        help="record only the cases whose references are missing, unreadable or stale, and keep the "
                             "rest (an update cut short, e.g. by a job's time limit, is finished by running it again "
                             "with --missing)")
    update.add_argument("--force", action="store_true", help="allowed under CI=true")
    # As many rounds as the gate takes: a reference of 3 rounds made the gate's ratio interval wide.
    add_model_args(update, rounds=8)
    update.set_defaults(func=update_references)
    show = baselines.add_parser("show", help="list stored references")
    show.add_argument("--baselines-dir", type=named, default=None)
    show.set_defaults(func=show_references)
    migrate = baselines.add_parser("migrate", help="convert a baseline folder written before the store had a "
                                                   "schema version (values kept, provenance regrouped)")
    migrate.add_argument("folders", nargs="+", help="<baselines>/<gpu>/<model fingerprint> folders")
    migrate.add_argument("--force", action="store_true", help="allowed under CI=true")
    migrate.set_defaults(func=migrate_folders)


def update_references(args) -> int:
    from ..components.stacks import BASELINE, baseline_first, parse_stacks
    from ..suite.hints import bootstrap_command, config_command
    from ..suite.session import FluxSession
    from ..store.baselines import BaselineKey, updates_allowed
    from .calibrate import calibrate_scenarios

    updates_allowed(args.force)  # fail before minutes of measuring
    stacks = ",".join(s.name for s in baseline_first(parse_stacks(args.stacks)))
    config = suite(args, stacks=stacks, scenarios=scenarios_of(args), update=True, force=args.force)
    session = FluxSession(config, log=progress, environment=args.environment, command=command_line())
    reasons = {stack.name: session.skip_reason(stack) for stack in config.stacks}  # None: runs here
    cases = [(stack, scenario) for stack in config.stacks for scenario in config.scenarios if not reasons[stack.name]]
    skipped = [(stack, scenario, reasons[stack.name]) for stack in config.stacks for scenario in config.scenarios
               if reasons[stack.name]]
    for name, reason in reasons.items():
        if reason:
            print(f"not updated: {name}: {reason}", file=sys.stderr)
    if args.missing:
        cases = missing_cases(session, cases)
    code = run_cases(session, cases, config, skipped=skipped)
    # A signal (a job's time limit) cut the update: what it finished is written, the rest (the
    # calibration too) is one command away.
    finish = bootstrap_command(config, "baselines update --missing")  # the same selection and folder
    if code >= 128:
        print(f"finish it with: {finish}, which records only what is still missing", file=sys.stderr)
    print("\n".join(["", "references written:", *session.baseline_updates]))
    machine = session.machine
    uncalibrated = [s for s in config.scenarios if args.calibrate == "all" or (
        args.calibrate == "missing" and not _calibrated(session.store, BaselineKey(machine.slug, machine.fingerprint,
                                                                                   s.id)))]
    spread = [s.name for s in config.stacks if s.name != BASELINE and not reasons[s.name]]  # all run here
    if uncalibrated and 0 < code < 128:
        again = config_command(config, spread, [s.id for s in uncalibrated], "calibrate --write")
        print(f"not calibrated ({', '.join(s.id for s in uncalibrated)}): a case above failed; fix it and run "
              f"`{again}`", file=sys.stderr)
    elif uncalibrated and code == 0:
        progress(f"calibrating fidelity at {', '.join(s.id for s in uncalibrated)}")
        session.runner.release()
        try:
            _, problems, _ = calibrate_scenarios(session.runner, session.store, machine, uncalibrated, write=True,
                                                 force=args.force, stacks=",".join(spread))
        except KeyboardInterrupt:
            print(f"finish it with: {finish}, which calibrates only what is still uncalibrated", file=sys.stderr)
            raise
        code = 1 if problems else 0
    if code == 0 and skipped:  # as the pytest form: a stack not run is not judged, never exit 0
        from ..report.judged import EXIT_NOT_JUDGED

        print(f"\nexit {EXIT_NOT_JUDGED}: not run: {', '.join(sorted({s.name for s, _, _ in skipped}))} (this "
              "machine cannot run it): its references were not updated", file=sys.stderr)
        return EXIT_NOT_JUDGED
    return code


def missing_cases(session, cases: list) -> list:
    """The cases of `cases` that need recording: references missing, unreadable or stale (the
    gate would not judge against them). A scenario whose bf16 baseline needs recording has every
    selected stack recorded again, since their fidelity is measured against it. The rest are kept,
    each said with a progress line."""
    from ..components.stacks import BASELINE
    from ..store.references import BASELINE_IMAGE, FIDELITY, LATENCY

    def needs(stack, scenario) -> str | None:
        refs = session.references(stack, scenario, session.provenance(stack))
        parts = (LATENCY, BASELINE_IMAGE) if stack.name == BASELINE else (LATENCY, BASELINE_IMAGE, FIDELITY)
        broken = [refs.problems[p] for p in parts if p in refs.problems]
        if refs.latency is None or (stack.name != BASELINE and refs.fidelity is None) or refs.baseline is None:
            broken.append("not recorded")
        if stack.name != BASELINE and refs.fidelity and refs.baseline and _earlier(
                refs.fidelity.provenance.recorded_at, refs.baseline.provenance.recorded_at):
            broken.append(f"its fidelity was measured against an earlier bf16 baseline (fidelity recorded "
                          f"{refs.fidelity.provenance.recorded_at}, the baseline {refs.baseline.provenance.recorded_at})")
        return "; ".join(broken + refs.stale_of(*parts)) or None

    reasons = {(stack.name, scenario.id): needs(stack, scenario) for stack, scenario in cases}
    new_baseline = {scenario.id for stack, scenario in cases
                    if stack.name == BASELINE and reasons[(BASELINE, scenario.id)]}
    chosen = []
    for stack, scenario in cases:
        why = reasons[(stack.name, scenario.id)] or (
            f"the bf16 baseline of {scenario.id} is recorded again" if scenario.id in new_baseline else None)
        if why:
            chosen.append((stack, scenario))
            progress(f"to record: {stack.name} at {scenario.id}: {why}")
        else:
            progress(f"kept: {stack.name} at {scenario.id} (recorded and fresh)")
    progress(f"--missing: {len(chosen)} of {len(cases)} cases to record")
    return chosen


def _earlier(recorded_at: str, than: str) -> bool:
    """`recorded_at` is strictly before `than` (ISO dates; False where either cannot be compared).
    An update is stack-major, bf16 first: a stack's fidelity older than the scenario's bf16 baseline
    was measured against an image since replaced (an update on purpose, cut short)."""
    import datetime

    try:
        return datetime.datetime.fromisoformat(recorded_at) < datetime.datetime.fromisoformat(than)
    except (TypeError, ValueError):  # unparsable, or one date without a time zone
        return False


def _calibrated(store, key) -> bool:
    """A usable calibration is stored for the key (a broken one is recalibrated, on purpose)."""
    from ..store.entries import BaselineError

    try:
        return bool(store.table(key, "calibration.json"))
    except BaselineError:
        return False


def show_references(args) -> int:
    """Every stored reference, one line each; an entry or file that cannot be read is listed as
    UNREADABLE with its file, key and what to do (exit 1), never a traceback."""
    from ..suite.config import default_baselines_dir, typed_path
    from ..suite.hints import record_command
    from ..store.baselines import TABLES, BaselineMissing, BaselineStore
    from ..store.entries import BaselineError

    root = typed_path(args.baselines_dir) if args.baselines_dir else default_baselines_dir()
    if not root.is_dir():
        raise BaselineMissing(f"baselines folder {root} does not exist or is not a folder: pass --baselines-dir "
                              "with the folder holding budgets.toml and <gpu>/<weights>/ references")
    store, unreadable = BaselineStore(root), 0
    folders = sorted(p for p in root.glob("*/*") if p.is_dir())
    if not folders:
        print(f"no references in {root} (record them with: {record_command(baselines_dir=root)})")
    for folder in folders:
        images = sorted(p.stem for p in folder.glob("*.png"))
        print(f"{folder.relative_to(root)}: bf16 baselines for {', '.join(images) or 'no scenario'}")
        for name in (n for n in TABLES if (folder / n).exists()):
            try:
                listed = store.listing(folder, name)
            except BaselineError as error:
                listed = [("", "", error)]
            for scenario, inner, entry in listed:
                where = f"  {name} {scenario} {inner}".rstrip()
                if isinstance(entry, BaselineError):
                    unreadable += 1
                    print(f"{where}: UNREADABLE ({_calibrate_here(str(entry), root, scenario)})")
                else:
                    print(f"{where}: {_describe(entry)}")
    if unreadable:
        print(f"{unreadable} unreadable in {root}: fix or restore each file named above (git checkout -- FILE), "
              "then update what is still missing", file=sys.stderr)
    return 1 if unreadable else 0


def _calibrate_here(problem: str, root, scenario: str) -> str:
    """A broken calibration's advice names the store's bare `calibrate --write` (a run puts its own
    command there, store/references.py): bare, it calibrates the default scenarios into the
    checkout's baselines/, so name this entry's scenario and the folder shown."""
    from ..store.entries import CALIBRATE_HINT
    from ..suite.hints import record_command

    return problem.replace(CALIBRATE_HINT, record_command("calibrate --write", baselines_dir=root,
                                                          scenarios=(scenario,) if scenario else ()))


def _describe(entry) -> str:
    from ..store.entries import CalibrationEntry, FidelityEntry, LatencyEntry

    when = entry.provenance.recorded_at or "unknown date"
    if isinstance(entry, LatencyEntry):
        rounds = f"over {len(entry.samples_s)} rounds" if entry.samples_s else "(its rounds not kept)"
        return f"{entry.median_s:.3f} s {rounds}, recorded {when}"
    if isinstance(entry, FidelityEntry):
        own = ", own latents kept" if entry.latents_sha256 else ""
        return f"SSIM {entry.ssim:.5f}{own}, recorded {when}"
    assert isinstance(entry, CalibrationEntry)
    return f"lossless band SSIM >= {entry.band.ssim:.5f}, spreads of {', '.join(entry.spread) or 'no stack'}, " \
           f"recorded {when}"


def migrate_folders(args) -> int:
    from ..store.baselines import updates_allowed
    from ..store.migrate import migrate_folder, store_files
    from ..suite.config import typed_path

    updates_allowed(args.force, "--force (flux-perf baselines migrate --force FOLDER)")
    folders = [typed_path(folder) for folder in args.folders]  # named absolute in every message
    for folder in folders:  # every folder at the right level before any is rewritten
        store_files(folder)
    for folder in folders:
        for line in migrate_folder(folder):
            print(line)
    return 0
