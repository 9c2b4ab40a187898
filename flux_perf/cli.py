"""`flux-perf`: ad-hoc runs, the list of stacks, baseline updates, run comparison, and the
interleaved A/B gate."""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from . import DEFAULT_REPORT_DIR
from .config import default_baselines_dir


def _progress(message: str) -> None:
    print(f"[flux-perf] {message}", flush=True)


def _scenarios(args):
    from .scenarios import Scenario, parse_resolution, parse_scenarios

    if args.scenarios is not None:
        return parse_scenarios(args.scenarios)
    if args.resolution is not None:
        height, width = parse_resolution(args.resolution)
        return (Scenario(height, width, args.steps, args.guidance, args.seed),)
    return parse_scenarios(None)


def _baselines_dir(args) -> Path:
    path = Path(args.baselines_dir) if args.baselines_dir else default_baselines_dir()
    if not (path / "budgets.toml").is_file():
        from .budgets import BudgetsError

        hint = "" if args.baselines_dir else " (flux-perf is not running from a checkout: pass --baselines-dir)"
        raise BudgetsError(f"no budgets.toml in {path}{hint}")
    return path


def _suite(args, *, stacks, scenarios, update=False, force=False):
    from .config import SuiteConfig, check_device_name
    from .measure import MeasureSettings
    from .pipeline import check_device, default_device
    from .stacks import parse_stacks

    if args.rounds < 1:
        raise ValueError(f"--rounds {args.rounds}: need at least 1 timed round")
    device = args.device or default_device()
    check_device_name(device)
    check_device(device)
    config = SuiteConfig(
        model=args.model, device=device, stacks=parse_stacks(stacks), scenarios=scenarios,
        measure=MeasureSettings(rounds=args.rounds, max_rounds=args.rounds), strict=False,
        report_dir=Path(args.report_dir), baselines_dir=_baselines_dir(args), update_baselines=update,
        force_update=force,
    )
    config.check_destinations()
    return config


def _image_path(template: str, scenario, stack) -> Path:
    try:
        return Path(template.format(scenario=scenario.id, stack=stack.name))
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"--save-image {template!r}: only {{scenario}} and {{stack}} may appear in it ({error!r})") \
            from None


def _run_cases(session, cases, config, *, show) -> int:
    """Measure every case, show each, and write the report whatever happens: an error or a Ctrl-C
    keeps every case that finished."""
    from .report import write_report

    failed = False
    try:
        for stack, scenario in cases:
            result = session.case(stack, scenario)
            if result.error:
                print(f"\n{result.id}: FAILED: {result.error}", file=sys.stderr)
                failed = True
            elif show:
                show(result)
    except KeyboardInterrupt:
        session.interrupted = session.interrupted or "interrupted (KeyboardInterrupt)"
        failed = True
        print("\ninterrupted: writing the report of the cases that finished", file=sys.stderr)
    finally:
        paths = write_report(session.results(), config.report_dir, log=_progress)
        print(f"\nreport: {paths['results']}")
    return 1 if failed else 0


def _stage_table(result) -> str:
    timed = result.timed
    rounds = timed.rounds
    median = statistics.median
    rows = [("reference encode", median([r.encode_ms for r in rounds]))]
    rows += [(f"step {i + 1}", median([r.step_ms[i] for r in rounds])) for i in range(len(rounds[0].step_ms))]
    rows += [("decode", median([r.decode_ms for r in rounds])),
             ("total (device)", median([r.total_ms for r in rounds])),
             ("wall (end to end)", median([r.wall_ms for r in rounds]))]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'stage':<{width}}  median ms"] + [f"{name:<{width}}  {ms:9.1f}" for name, ms in rows]
    return "\n".join(lines)


def cmd_run(args) -> int:
    from .session import FluxSession
    from .stacks import parse_stack

    config = _suite(args, stacks=args.stack, scenarios=_scenarios(args))
    stack = parse_stack(args.stack)
    if args.save_image:
        for scenario in config.scenarios:  # a bad template must not cost the measurements
            _image_path(args.save_image, scenario, stack)
    session = FluxSession(config, log=_progress, environment=args.environment,
                          command=shlex.join(["flux-perf", *sys.argv[1:]]))
    chosen = "chosen by default" if not args.model else "as asked"
    _progress(f"model: {session.machine.source.label} ({chosen}; fingerprint {session.machine.fingerprint}) "
              f"on {session.machine.gpu_name or config.device}")
    reason = session.skip_reason(stack)
    if reason:
        print(f"flux-perf: cannot run stack {stack.name}: {reason}", file=sys.stderr)
        return 2

    def show(result) -> None:
        timed = result.timed
        print(f"\n== {stack.name} at {result.measured.effective.id}: model built in {result.measured.build_s:.2f} s, "
              f"first call {timed.first_call_s:.2f} s, {timed.wall.n} timed rounds")
        print(_stage_table(result))
        print(f"same image in every round (same seed): {'yes' if timed.deterministic else 'NO'}")
        if result.fidelity and result.fidelity.ssim is not None:
            print(f"SSIM vs bf16 baseline: {result.fidelity.ssim:.4f}")
        if result.target:
            verdict = "met" if result.target["met"] else f"not met by {result.target['gap_s']:.3f} s"
            print(f"target {result.target['seconds']:.2f} s: {verdict}")
        if args.save_image:
            from PIL import Image

            path = _image_path(args.save_image, result.scenario, stack)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(timed.image).save(path)
                print(f"image: {path}")
            except OSError as error:
                print(f"could not save the image to {path}: {error}", file=sys.stderr)

    return _run_cases(session, [(stack, scenario) for scenario in config.scenarios], config, show=show)


def cmd_stacks(args) -> int:
    from .components import REGISTRY, Capabilities
    from .config import check_device_name
    from .pipeline import default_device
    from .stacks import NAMED_STACKS, parse_stack

    check_device_name(args.device or default_device())
    caps = Capabilities.detect(args.device or default_device())
    print(f"machine: {caps.gpu_name or caps.device}" + (f" (sm_{caps.capability[0]}{caps.capability[1]})" if caps.capability else ""))
    print("\nnamed stacks:")
    for name in NAMED_STACKS:
        stack = parse_stack(name)
        reason = stack.unmet(caps)
        print(f"  {name:<10} {stack.describe():<70} {'ok' if not reason else 'skip: ' + reason}")
    print("\ncomponents (lossless = expected to keep the bf16 output):")
    for name, cls in sorted(REGISTRY.items()):
        component = cls()
        reason = component.unmet(caps)
        kind = "lossless" if cls.lossless else "lossy"
        print(f"  {name:<18} {kind:<8} {cls.summary}")
        if reason:
            print(f"  {'':<18} skip: {reason}")
    return 0


def cmd_baselines_update(args) -> int:
    from .baselines import updates_allowed
    from .session import FluxSession
    from .stacks import BASELINE, DEFAULT_STACKS, parse_stacks

    updates_allowed(args.force)  # fail before minutes of measuring
    stacks = args.stacks or ",".join(DEFAULT_STACKS)
    if BASELINE not in [s.name for s in parse_stacks(stacks)]:
        stacks = f"{BASELINE},{stacks}"  # the reference image comes from bf16: always, first
    config = _suite(args, stacks=stacks, scenarios=_scenarios(args), update=True, force=args.force)
    session = FluxSession(config, log=_progress, environment=args.environment,
                          command=shlex.join(["flux-perf", *sys.argv[1:]]))
    cases = [(stack, scenario) for stack in config.stacks for scenario in config.scenarios
             if not session.skip_reason(stack)]
    for stack in config.stacks:
        reason = session.skip_reason(stack)
        if reason:
            print(f"not updated: {stack.name}: {reason}", file=sys.stderr)
    code = _run_cases(session, cases, config, show=None)
    print("\n".join(["", "references written:", *session.baseline_updates]))
    return code


def cmd_baselines_show(args) -> int:
    root = Path(args.baselines_dir) if args.baselines_dir else default_baselines_dir()
    for meta in sorted(root.glob("*/*/*.json")):
        name = meta.relative_to(root)
        try:
            record = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            print(f"{name}: UNREADABLE ({error})")
            continue
        if not isinstance(record, dict):
            print(f"{name}: UNREADABLE (a JSON {type(record).__name__}, not an object)")
        elif meta.name in ("fidelity.json", "calibration.json"):
            for scenario, entries in record.items():
                for stack, entry in (entries.items() if isinstance(entries, dict) else ()):
                    ssim = (entry.get("band") or {}).get("ssim") if meta.name == "calibration.json" else entry.get("ssim")
                    what = "lossless band SSIM >=" if meta.name == "calibration.json" else "SSIM"
                    own = ", own latents kept" if isinstance(entry, dict) and entry.get("latents_sha256") else ""
                    print(f"{name} {scenario} {stack}: {what} {ssim}{own}, recorded {entry.get('recorded_at')}")
        elif meta.name == "latency.json":
            for scenario, stacks in record.items():
                for stack, entry in (stacks.items() if isinstance(stacks, dict) else ()):
                    median = entry.get("median_s") if isinstance(entry, dict) else None
                    print(f"{name} {scenario} {stack}: "
                          + (f"{median:.3f} s, recorded {entry.get('recorded_at')}"
                             if isinstance(median, (int, float)) else f"UNREADABLE entry {entry!r:.60}"))
        else:
            latency = (record.get("latency") or {}).get("median") if isinstance(record.get("latency"), dict) else None
            print(f"{name}: {record.get('created_at')} torch {(record.get('software') or {}).get('torch')}"
                  + (f", bf16 median {latency:.3f} s" if isinstance(latency, (int, float)) else ""))
    return 0


def cmd_calibrate(args) -> int:
    from .baselines import BaselineError, BaselineKey, BaselineStore, updates_allowed
    from .calibrate import BREAKS, LOSSLESS_CPU, LOSSLESS_CUDA, calibrate_scenario, format_calibration, runnable
    from .files import write_json
    from .machine import Machine
    from .models import resolve_model_source
    from .runner import CaseRunner
    from .stacks import BASELINE, DEFAULT_STACKS

    if args.write:
        updates_allowed(args.force)  # refuse before minutes of measuring
    if args.repeats < 1 or not args.margin >= 1:
        raise ValueError(f"--repeats {args.repeats} must be >= 1 and --margin {args.margin} >= 1")
    if args.restate:
        return _restate_calibration(args)
    config = _suite(args, stacks=BASELINE, scenarios=_scenarios(args))
    machine = Machine.detect(config.device, resolve_model_source(config.model, config.device))
    cuda = config.device.startswith("cuda")

    def listed(text, default):
        return [s for s in (text.split(",") if text is not None else default) if s]

    lossless, skipped = runnable(listed(args.lossless, LOSSLESS_CUDA if cuda else LOSSLESS_CPU), machine.caps)
    stacks, more = runnable(listed(args.stacks, [s for s in DEFAULT_STACKS if s != BASELINE]), machine.caps)
    breaks, rest = runnable(listed(args.breaks, BREAKS), machine.caps)
    for line in skipped + more + rest:
        print(f"not measured: {line}", file=sys.stderr)
    store = BaselineStore(config.baselines_dir)
    runner = CaseRunner(machine.source, config.device, log=lambda m: _progress("  " + m))
    results, report = [], {}
    for scenario in config.scenarios:
        key = BaselineKey(machine.slug, machine.fingerprint, scenario.id)
        _progress(f"calibrating {key}: {len(lossless) + 1} lossless, {len(stacks)} stacks x {args.repeats}, "
                  f"{len(breaks)} breaks")
        result = calibrate_scenario(runner, store, key, scenario, lossless=lossless, stacks=stacks, breaks=breaks,
                                    repeats=args.repeats, margin=args.margin, log=_progress,
                                    cold_compiles=args.cold_compiles)
        results.append((key, result))
        report[scenario.id] = result.entry()
        print(format_calibration(result))
    if args.json:
        write_json(Path(args.json), {"flux_perf_calibration": 1, "key": str(results[0][0]), "scenarios": report})
        print(f"\nmeasurements and proposal: {args.json}")
    if not args.write:
        print("\nnothing written: add --write to store this proposal for these weights on this GPU")
        return 0
    for key, result in results:
        try:
            old = store.calibration(key)
        except BaselineError as error:
            print(f"{key}: replacing an unusable calibration ({error})")
            old = None
        path = store.record_calibration(key, result.entry(), force=args.force)
        before = f"band SSIM {old['band']['ssim']:.5f} -> " if old else "new: band SSIM "
        print(f"{key}: {before}{result.band['ssim']:.5f} ({path})")
    return 0


def _restate_calibration(args) -> int:
    """`calibrate --restate FOLDER`: re-propose each stored calibration of a baseline folder
    from the distances it holds, print it, and write it back only with --write."""
    from .baselines import BaselineKey, BaselineStore
    from .calibrate import format_calibration, restated
    from .scenarios import parse_scenario

    folder = Path(args.restate)
    path = folder / "calibration.json"
    if not path.is_file():
        raise ValueError(f"--restate {folder}: no calibration.json there (a baseline folder: "
                         "<baselines>/<gpu>/<model fingerprint>)")
    store = BaselineStore(folder.parent.parent)
    try:
        scenario_ids = sorted(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
        raise ValueError(f"--restate: {path} is not a calibration table ({error})") from None
    for scenario_id in scenario_ids:
        key = BaselineKey(folder.parent.name, folder.name, scenario_id)
        old = store.calibration(key)
        result = restated(old, parse_scenario(scenario_id), args.margin)
        print(format_calibration(result))
        if args.write:
            entry = {**result.entry(), "restated_from": {k: old.get(k) for k in ("recorded_at", "commit", "band")}}
            store.record_calibration(key, entry, force=args.force)
            print(f"{key}: band SSIM {old['band']['ssim']:.6f} -> {result.band['ssim']:.6f} ({path})")
    if not args.write:
        print("\nnothing written: add --write to store the restated proposal")
    return 0


def cmd_account(args) -> int:
    from .account import account, account_to_json, format_account, load_context, read_trace
    from .files import write_json

    trace_path = Path(args.trace)
    steps, flops, ceilings, source = load_context(trace_path, Path(args.results) if args.results else None)
    result = account(read_trace(trace_path), steps, flops, ceilings)
    print(format_account(result, source))
    if args.json:
        write_json(Path(args.json), account_to_json(result, source))
    return 0


def cmd_compare(args) -> int:
    from .compare import compare_files, format_rows, has_regression

    rows = compare_files(args.base, args.head, args.tolerance)
    print(format_rows(rows, args.tolerance))
    if has_regression(rows):
        print("\nregression: a case is slower beyond the tolerance with confidence, or the head lost it",
              file=sys.stderr)
        return 1
    return 0


def cmd_ab(args) -> int:
    from .ab import cases_to_json, check_tolerance, format_cases, run_ab
    from .config import check_writable_dir
    from .files import write_json
    from .scenarios import parse_scenarios
    from .stacks import parse_stacks

    check_tolerance(args.tolerance)
    stacks = [s.name for s in parse_stacks(args.stacks)]
    scenarios = [s.id for s in parse_scenarios(args.scenarios or "512x512@6,1024x1024@8")]
    inject = {"base": args.base_inject_slowdown, "head": args.head_inject_slowdown}
    settings = {"base": args.base, "head": args.head, "pairs": args.pairs or "auto",
                "block_seconds": None if args.pairs else args.block_seconds, "blocks": args.blocks, "pinned": not args.no_pin,
                "tolerance": args.tolerance, "inject": inject, "control": args.control,
                "command": shlex.join(["flux-perf", *sys.argv[1:]])}

    def save(cases, final: bool) -> None:  # after every block: a run cut short keeps its rounds
        if args.json:
            write_json(Path(args.json), cases_to_json(cases, settings, final))

    if args.json:
        check_writable_dir(Path(args.json).parent, "--json folder")
    cases = run_ab(Path(args.base), Path(args.head), stacks, scenarios, pairs=args.pairs, blocks=args.blocks,
                   block_seconds=args.block_seconds,
                   tolerance=args.tolerance, model=args.model, device=args.device or "cuda", inject=inject,
                   log=_progress, pin=not args.no_pin, control=args.control,
                   on_block=lambda cases: save(cases, final=False))
    save(cases, final=True)
    print(format_cases(cases, args.tolerance))
    if args.json:
        print(f"\nA/B rounds and verdicts: {args.json}")
    if any(case.verdict in ("error", "disturbed") for case in cases):
        return 3  # not a verdict on the code: re-run on a quiet machine
    return 1 if any(case.verdict == "slower" for case in cases) else 0


def cmd_ab_pairs(args) -> int:
    from .ab import check_tolerance
    from .ab_pairs import (blocks_added, disjoint_runs, files_summary, format_blocks, format_runs, measured_pairs,
                           rule_settings, verdict_rates)
    from .files import write_json

    check_tolerance(args.tolerance)
    paths = [Path(path) for path in args.files]
    if args.runs:
        sizes = [int(n) for n in args.runs.split(",")]
        if any(n < 2 for n in sizes) or (args.family is not None and args.family < 1):
            raise ValueError(f"--runs {args.runs} --family {args.family}: a run needs at least 2 pairs, Holm 1 case")
        runs = disjoint_runs(paths, sizes, args.tolerance, args.family)
        added = blocks_added(paths, args.tolerance, args.family)
        print(format_runs(runs, args.tolerance, args.family) + "\n\n" + format_blocks(added))
        result = {"flux_perf_ab_runs": 1, "command": shlex.join(["flux-perf", *sys.argv[1:]]),
                  "rule": rule_settings(args.tolerance, args.family), "files": files_summary(paths),
                  "runs": runs, "blocks_added": added}
    else:
        sizes = [int(n) for n in args.sizes.split(",")]
        if any(n < 2 for n in sizes):
            raise ValueError(f"--sizes {args.sizes}: a block needs at least 2 pairs")
        print(f"verdicts of a block of n pairs, resampled {args.draws}x from the measured pairs "
              f"(tolerance {args.tolerance:.0%})")
        result = {}
        for path in paths:
            for case, pairs in measured_pairs(path).items():
                rates = verdict_rates(pairs, sizes, args.tolerance, args.draws)
                result.setdefault(str(path), {})[case] = rates
                cells = ", ".join(f"{n}: " + " ".join(f"{change} {share:.0%}" for change, share in rate.items()
                                                      if share) for n, rate in rates.items())
                print(f"{path} {case} ({len(pairs)} pairs): {cells}")
    if args.json:
        write_json(Path(args.json), result)
    return 0


def cmd_table(args) -> int:
    from .report import component_rows, component_table, failed_cases, load_runs, physics_table, skipped_table

    stacks = set(args.stacks.split(",")) if args.stacks else None
    scenarios = set(args.scenarios.split(",")) if args.scenarios else None

    def kept(stack: str, scenario: str) -> bool:
        return (stacks is None or stack in stacks) and (scenarios is None or scenario in scenarios)

    runs = load_runs(args.results)
    skipped = [dict(s, run=run.name) for run in runs for s in run.results.skipped if kept(s["stack"], s["scenario"])]
    skipped += failed_cases(runs, kept)
    if args.json:
        print(json.dumps({"sources": args.results, "rows": component_rows(runs, kept), "not_run": skipped}, indent=1))
        return 0
    print((component_table if args.kind == "components" else physics_table)(runs, kept), end="")
    if skipped:
        print("\nNot run on the machine of these runs:\n")
        print(skipped_table(skipped), end="")
    return 0


def _add_model_args(parser, rounds: int = 3) -> None:
    parser.add_argument("--model", default=None,
                        help="synthetic | tiny | a diffusers pipeline directory | hub:OWNER/NAME "
                             "(default: synthetic on a GPU, tiny on a CPU)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present)")
    parser.add_argument("--baselines-dir", default=None,
                        help="baseline store with budgets.toml (default: the checkout's baselines/)")
    parser.add_argument("--report-dir", default=DEFAULT_REPORT_DIR)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"timed rounds per scenario (default: {rounds})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flux-perf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="time one stack at one or more scenarios and print the per-stage table")
    run.add_argument("--resolution", default=None, help="N or HxW (default: the guide's four scenarios)")
    run.add_argument("--steps", type=int, default=6)
    run.add_argument("--guidance", type=float, default=2.5)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--scenarios", default=None, help="comma-separated HxW@STEPS (instead of --resolution)")
    run.add_argument("--stack", default="bf16", help="a stack (see `flux-perf stacks`)")
    run.add_argument("--save-image", default=None, help="write the output PNG; may contain {scenario} and {stack}")
    _add_model_args(run)
    run.set_defaults(func=cmd_run)

    stacks = sub.add_parser("stacks", help="list named stacks and components, and what this machine can run")
    stacks.add_argument("--device", default=None)
    stacks.set_defaults(func=cmd_stacks)

    baselines = sub.add_parser("baselines", help="the bf16 reference images").add_subparsers(dest="action", required=True)
    update = baselines.add_parser("update", help="re-record every stack's references on purpose (bf16 image too)")
    update.add_argument("--stacks", default=None,
                        help="comma-separated stacks to re-record (default: bf16,compile,fp8,fast)")
    update.add_argument("--scenarios", default=None, help="comma-separated HxW@STEPS (default: the guide's four)")
    update.add_argument("--resolution", default=None)
    update.add_argument("--steps", type=int, default=6)
    update.add_argument("--guidance", type=float, default=2.5)
    update.add_argument("--seed", type=int, default=0)
    update.add_argument("--force", action="store_true", help="allowed under CI=true")
    # As many rounds as the gate takes: a reference of 3 rounds made the gate's ratio interval wide.
    _add_model_args(update, rounds=8)
    update.set_defaults(func=cmd_baselines_update)
    show = baselines.add_parser("show", help="list stored baselines")
    show.add_argument("--baselines-dir", default=None)
    show.set_defaults(func=cmd_baselines_show)

    calibrate = sub.add_parser("calibrate", help="measure the lossless band and fidelity spread for these weights "
                                                 "on this GPU; propose it, write it with --write")
    calibrate.add_argument("--scenarios", default=None, help="comma-separated HxW@STEPS (default: the guide's four)")
    calibrate.add_argument("--resolution", default=None)
    calibrate.add_argument("--steps", type=int, default=6)
    calibrate.add_argument("--guidance", type=float, default=2.5)
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--lossless", default=None,
                           help="exact-math variants of bf16 (default on a GPU: attn-cudnn,attn-flash-sdpa,"
                                "attn-efficient,compile-regional)")
    calibrate.add_argument("--stacks", default=None, help="stacks whose spread to measure (default: compile,fp8,fast)")
    calibrate.add_argument("--breaks", default=None, help="planted breaks to locate (default: noise:0.01,wrong-shift)")
    calibrate.add_argument("--repeats", type=int, default=2, help="fresh builds per stack (default 2)")
    calibrate.add_argument("--cold-compiles", action="store_true",
                           help="compile every stack build from scratch (no dynamo state, inductor caches off), so "
                                "the spread includes the compiler's own choices, as on another machine; slower")
    calibrate.add_argument("--margin", type=float, default=1.5,
                           help="the band reaches this many times the farthest lossless variant (default 1.5)")
    calibrate.add_argument("--write", action="store_true", help="store the proposal in the baseline store")
    calibrate.add_argument("--force", action="store_true", help="allow --write under CI")
    calibrate.add_argument("--json", default=None, help="write every measurement and the proposal here")
    calibrate.add_argument("--restate", default=None, metavar="FOLDER",
                           help="no measuring: re-propose the calibrations stored in this baseline folder "
                                "from the distances they hold (for a new --margin or band rule)")
    _add_model_args(calibrate)
    calibrate.set_defaults(func=cmd_calibrate)

    account = sub.add_parser("account", help="where a denoising step's time goes, from a --flux-profile trace")
    account.add_argument("trace", help="a chrome trace written by --flux-profile (report/profiles/<case>.json)")
    account.add_argument("--results", default=None,
                         help="the run's results.json for steps, FLOPs and ceilings (default: the report's own)")
    account.add_argument("--json", default=None, help="write the account here")
    account.set_defaults(func=cmd_account)

    compare = sub.add_parser("compare", help="compare two results.json files; exit 1 on a real regression")
    compare.add_argument("base")
    compare.add_argument("head")
    compare.add_argument("--tolerance", type=float, default=0.03, help="relative change treated as noise (default 0.03)")
    compare.set_defaults(func=cmd_compare)

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
    pairs.add_argument("--json", default=None, help="write the counts (or resampled rates) here")
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
                    help="blocks of pairs per case on the same warm workers (default 1); the verdict pools every "
                         "block's pairs, so more blocks only add power")
    ab.add_argument("--tolerance", type=float, default=0.01,
                    help="head/base change treated as noise (default 0.01); slower "
                         "needs Holm's correction over the run's cases")
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
                         "(e.g. 0.02), interleaved with the others; a case whose pairs do not see it slower says "
                         "inconclusive instead of same. Costs half as many rounds again")
    ab.set_defaults(func=cmd_ab)
    table = sub.add_parser("table", help="merge results.json files into one Markdown table")
    table.add_argument("results", nargs="+")
    table.add_argument("--kind", choices=("components", "physics"), default="components",
                       help="components: latency, step, speed-up, compile, memory, SSIM; "
                            "physics: TFLOP/s and fraction of the matmul ceilings")
    table.add_argument("--stacks", default=None, help="comma-separated stack names to keep")
    table.add_argument("--scenarios", default=None, help="comma-separated scenario ids to keep (e.g. 512x512@6)")
    table.add_argument("--json", action="store_true", help="the component rows and what could not run, as JSON")
    table.set_defaults(func=cmd_table)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .environment import apply_guide_environment

    args.environment = apply_guide_environment()  # before CUDA initialises
    from .ab import AbError
    from .baselines import BaselineError
    from .budgets import BudgetsError
    from .components import ComponentError
    from .config import ConfigError
    from .models import ModelSourceError
    from .pipeline import DeviceError
    from .records import ResultsError
    from .scenarios import ScenarioError

    try:
        return args.func(args)
    except (ScenarioError, ComponentError, ModelSourceError, DeviceError, BudgetsError, BaselineError,
            ResultsError, ConfigError, AbError, ValueError) as error:
        print(f"flux-perf: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
