"""`flux-perf`: ad-hoc runs, the list of stacks, baseline updates, and run comparison."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .config import DEFAULT_REPORT_DIR


def _progress(message: str) -> None:
    print(f"[flux-perf] {message}", flush=True)


def _scenarios(args):
    from .scenarios import Scenario, parse_scenarios

    if args.scenarios:
        return parse_scenarios(args.scenarios)
    if args.resolution is not None:
        height, _, width = str(args.resolution).partition("x")
        return (Scenario(int(height), int(width or height), args.steps, args.guidance, args.seed),)
    return parse_scenarios(None)


def _suite(args, *, stacks, scenarios, update=False, force=False):
    from .config import SuiteConfig
    from .measure import MeasureSettings
    from .pipeline import check_device, default_device
    from .stacks import parse_stacks

    device = check_device(args.device or default_device())
    root = Path(__file__).resolve().parent.parent
    baselines = Path(args.baselines_dir) if args.baselines_dir else root / "baselines"
    return SuiteConfig(
        model=args.model, device=device, stacks=parse_stacks(stacks), scenarios=scenarios,
        measure=MeasureSettings(rounds=args.rounds, max_rounds=args.rounds), strict=False,
        report_dir=Path(args.report_dir), baselines_dir=baselines, update_baselines=update, force_update=force,
    )


def _stage_table(result) -> str:
    timed = result.timed
    rounds = timed.rounds
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
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
    session = FluxSession(config, log=_progress)
    session.environment_report = args.environment
    session.command = shlex.join(["flux-perf", *sys.argv[1:]])
    chosen = "chosen by default" if not args.model else "as asked"
    _progress(f"model: {session.source.label} ({chosen}; fingerprint {session.source.fingerprint()}) "
              f"on {session.gpu_name or config.device}")
    stack = parse_stack(args.stack)
    reason = session.skip_reason(stack)
    if reason:
        print(f"flux-perf: cannot run stack {stack.name}: {reason}", file=sys.stderr)
        return 2
    failed = False
    for scenario in config.scenarios:
        result = session.case(stack, scenario)
        if result.error:
            print(f"\n{scenario.id}: FAILED: {result.error}", file=sys.stderr)
            failed = True
            continue
        timed = result.timed
        print(f"\n== {stack.name} at {result.effective.id}: model built in {result.build_s:.2f} s, "
              f"first call {timed.first_call_s:.2f} s, {timed.wall.n} timed rounds")
        print(_stage_table(result))
        print(f"same image in every round (same seed): {'yes' if timed.deterministic else 'NO'}")
        if result.fidelity and result.fidelity.ssim is not None:
            print(f"SSIM vs bf16 baseline: {result.fidelity.ssim:.4f}")
        if args.save_image:
            from PIL import Image

            path = Path(args.save_image.format(scenario=scenario.id, stack=stack.name))
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(timed.image).save(path)
            print(f"image: {path}")
    from .report import write_report

    paths = write_report(session, config.report_dir)
    print(f"\nreport: {paths['results']}")
    return 1 if failed else 0


def cmd_stacks(args) -> int:
    from .components import REGISTRY, Capabilities
    from .pipeline import default_device
    from .stacks import NAMED_STACKS, parse_stack

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
    from .stacks import BASELINE

    updates_allowed(args.force)  # fail before minutes of measuring
    config = _suite(args, stacks=BASELINE, scenarios=_scenarios(args), update=True, force=args.force)
    session = FluxSession(config, log=_progress)
    session.environment_report = args.environment
    session.command = shlex.join(["flux-perf", *sys.argv[1:]])
    failed = False
    for scenario in config.scenarios:
        result = session.case(config.stacks[0], scenario)
        if result.error:
            print(f"{scenario.id}: FAILED: {result.error}", file=sys.stderr)
            failed = True
    print("\n".join(["", "baselines written:", *session.baseline_updates]))
    return 1 if failed else 0


def cmd_baselines_show(args) -> int:
    root = Path(args.baselines_dir) if args.baselines_dir else Path(__file__).resolve().parent.parent / "baselines"
    for meta in sorted(root.glob("*/*/*.json")):
        if meta.name == "latency.json":
            continue
        record = json.loads(meta.read_text())
        latency = record.get("latency", {}).get("median")
        print(f"{meta.relative_to(root)}: {record.get('created_at')} torch {record.get('software', {}).get('torch')} "
              f"bf16 median {latency:.3f} s" if latency else f"{meta.relative_to(root)}")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare_runs, format_rows, has_regression, load_results

    rows = compare_runs(load_results(args.base), load_results(args.head), args.tolerance)
    print(format_rows(rows, args.tolerance))
    if has_regression(rows):
        print("\nregression: at least one case is slower beyond the tolerance, with confidence", file=sys.stderr)
        return 1
    return 0


def cmd_table(args) -> int:
    from .report import component_rows, component_table, load_records, load_skipped, physics_table, skipped_table

    stacks = set(args.stacks.split(",")) if args.stacks else None
    scenarios = set(args.scenarios.split(",")) if args.scenarios else None

    def kept(stack: str, scenario: str) -> bool:
        return (stacks is None or stack in stacks) and (scenarios is None or scenario in scenarios)

    records = [r for r in load_records(args.results) if kept(r["stack"], r["scenario"]["id"])]
    skipped = [s for s in load_skipped(args.results) if kept(s["stack"], s["scenario"])]
    if args.json:
        print(json.dumps({"sources": args.results, "rows": component_rows(records), "not_run": skipped}, indent=1))
        return 0
    print((component_table if args.kind == "components" else physics_table)(records), end="")
    if skipped:
        print("\nNot run on the machine of these runs:\n")
        print(skipped_table(skipped), end="")
    return 0


def _add_model_args(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="synthetic | tiny | a diffusers pipeline directory | a hub id "
                             "(default: synthetic on a GPU, tiny on a CPU)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present)")
    parser.add_argument("--baselines-dir", default=None, help="baseline store (default: the checkout's baselines/)")
    parser.add_argument("--report-dir", default=DEFAULT_REPORT_DIR)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per scenario (default: 3)")


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
    update = baselines.add_parser("update", help="regenerate bf16 baselines on purpose")
    update.add_argument("--scenarios", default=None, help="comma-separated HxW@STEPS (default: the guide's four)")
    update.add_argument("--resolution", default=None)
    update.add_argument("--steps", type=int, default=6)
    update.add_argument("--guidance", type=float, default=2.5)
    update.add_argument("--seed", type=int, default=0)
    update.add_argument("--force", action="store_true", help="allowed under CI=true")
    _add_model_args(update)
    update.set_defaults(func=cmd_baselines_update)
    show = baselines.add_parser("show", help="list stored baselines")
    show.add_argument("--baselines-dir", default=None)
    show.set_defaults(func=cmd_baselines_show)

    compare = sub.add_parser("compare", help="compare two results.json files; exit 1 on a real regression")
    compare.add_argument("base")
    compare.add_argument("head")
    compare.add_argument("--tolerance", type=float, default=0.03, help="relative change treated as noise (default 0.03)")
    compare.set_defaults(func=cmd_compare)
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
    from .baselines import BaselineError
    from .budgets import BudgetsError
    from .compare import ResultsError
    from .components import ComponentError
    from .models import ModelSourceError
    from .pipeline import DeviceError
    from .scenarios import ScenarioError

    try:
        return args.func(args)
    except (ScenarioError, ComponentError, ModelSourceError, DeviceError, BudgetsError, BaselineError,
            ResultsError) as error:
        print(f"flux-perf: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
