"""`flux-perf run`: time one stack at one or more scenarios and print the per-stage table."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from .. import DEFAULT_REPORT_DIR
from ..suite.config import ConfigError, typed_path
from .shared import add_model_args, add_scenario_args, command_line, progress, run_cases, scenarios_of, suite
from ..suite.values import named


def register(sub) -> None:
    parser = sub.add_parser("run", help="time one stack at one or more scenarios and print the per-stage table")
    add_scenario_args(parser)
    parser.add_argument("--stack", default="bf16", help="a stack (see `flux-perf stacks`)")
    parser.add_argument("--save-image", type=named, default=None, help="write the output PNG; may contain {scenario} and {stack}")
    add_model_args(parser)
    # Not the gate's folder: a quick run would replace the results.json `ab --undecided-from` reads.
    parser.set_defaults(func=run, report_dir=f"{DEFAULT_REPORT_DIR}/run")


def image_path(template: str, scenario, stack) -> Path:
    try:
        return typed_path(template.format(scenario=scenario.id, stack=stack.name))  # named absolute
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as error:  # {stack.name}, {0:d}
        raise ConfigError(f"--save-image {template!r}: only {{scenario}} and {{stack}} may appear in it ({error!r})") \
            from None


def stage_table(result) -> str:
    rounds = result.timed.rounds
    median = statistics.median
    rows = [("reference encode", median([r.encode_ms for r in rounds]))]
    rows += [(f"step {i + 1}", median([r.step_ms[i] for r in rounds])) for i in range(len(rounds[0].step_ms))]
    rows += [("decode", median([r.decode_ms for r in rounds])),
             ("total (device)", median([r.total_ms for r in rounds])),
             ("wall (end to end)", median([r.wall_ms for r in rounds]))]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{'stage':<{width}}  median ms"] + [f"{name:<{width}}  {ms:9.1f}" for name, ms in rows])


def _show(result, stack, save_image) -> None:
    timed = result.timed
    print(f"\n== {stack.name} at {result.measured.effective.id}: model built in {result.measured.build_s:.2f} s, "
          f"first call {timed.first_call_s:.2f} s, {timed.wall.n} timed rounds")
    print(stage_table(result))
    print(f"same image in every round (same seed): {'yes' if timed.deterministic else 'NO'}")
    if result.fidelity and result.fidelity.ssim is not None:
        print(f"SSIM vs bf16 baseline: {result.fidelity.ssim:.4f}")
    if result.target:
        print(f"target {result.target.seconds:.2f} s: " +
              ("met" if result.target.met else f"not met by {result.target.gap_s:.3f} s"))
    if save_image:
        from PIL import Image

        path = image_path(save_image, result.scenario, stack)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(timed.image).save(path)
            print(f"image: {path}")
        except OSError as error:
            print(f"could not save the image to {path}: {error}", file=sys.stderr)


def run(args) -> int:
    from ..components.stacks import parse_stack
    from ..suite.session import FluxSession

    config = suite(args, stacks=args.stack, scenarios=scenarios_of(args))
    stack = parse_stack(args.stack)
    if args.save_image:
        for scenario in config.scenarios:  # a bad template must not cost the measurements
            image_path(args.save_image, scenario, stack)
    session = FluxSession(config, log=progress, environment=args.environment, command=command_line(),
                          judges=False)
    chosen = "chosen by default" if not args.model else "as asked"
    progress(f"model: {session.machine.source.label} ({chosen}; fingerprint {session.machine.fingerprint}) "
             f"on {session.machine.gpu_name or config.device}")
    reason = session.skip_reason(stack)
    if reason:
        print(f"flux-perf: cannot run stack {stack.name}: {reason}", file=sys.stderr)
        return 2
    return run_cases(session, [(stack, scenario) for scenario in config.scenarios], config,
                     show=lambda result: _show(result, stack, args.save_image))
