"""What several subcommands share: the model and scenario options (declared once), the suite
settings built from them, progress lines, and measuring a list of cases with a report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .. import DEFAULT_REPORT_DIR, TELEMETRY_INTERVAL_S
from ..suite.config import ConfigError, SuiteConfig, default_baselines_dir, typed_path
from ..suite.values import named, positive_seconds


def progress(message: str) -> None:
    print(f"[flux-perf] {message}", flush=True)


def command_line() -> str:
    return shlex.join(["flux-perf", *sys.argv[1:]])


def add_scenario_args(parser, *, several: bool = True) -> None:
    """`--scenarios HxW@STEPS,...` or one `--resolution N|HxW` with --steps/--guidance/--seed."""
    if several:
        parser.add_argument("--scenarios", default=None, help="comma-separated HxW@STEPS (default: the guide's four)")
    parser.add_argument("--resolution", default=None, help="N or HxW (instead of --scenarios)")
    # None, not the defaults: given without --resolution they would be ignored without a word.
    parser.add_argument("--steps", type=int, default=None, help="with --resolution (default: 6)")
    parser.add_argument("--guidance", type=float, default=None, help="with --resolution (default: 2.5)")
    parser.add_argument("--seed", type=int, default=None, help="with --resolution (default: 0)")


def add_model_args(parser, rounds: int = 3, timed: bool = True) -> None:
    """The model, device, folders and rounds; `timed` False for a command that times no rounds and
    writes no report (calibrate only generates images): it takes no --rounds, --report-dir or
    --telemetry-interval, which it would ignore without a word."""
    parser.add_argument("--model", type=named, default=None,
                        help="synthetic | tiny | a diffusers pipeline directory | hub:OWNER/NAME "
                             "(default: synthetic on a GPU, tiny on a CPU)")
    parser.add_argument("--device", type=named, default=None, help="cuda, cuda:N or cpu (default: cuda when present)")
    parser.add_argument("--baselines-dir", type=named, default=None,
                        help="baseline store with budgets.toml (default: the checkout's baselines/)")
    if not timed:
        return
    parser.add_argument("--report-dir", type=named, default=DEFAULT_REPORT_DIR)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"timed rounds per scenario (default: {rounds})")
    parser.add_argument("--telemetry-interval", type=positive_seconds, default=TELEMETRY_INTERVAL_S,
                        metavar="SECONDS", help="seconds between NVML samples of the GPU during the timed "
                                                "rounds (default: %(default)s)")


def scenarios_of(args):
    """--scenarios, or one scenario from --resolution with --steps/--guidance/--seed, or the four."""
    from ..model.scenarios import Scenario, ScenarioError, parse_resolution, parse_scenarios

    given = {name: value for name in ("resolution", "steps", "guidance", "seed")
             if (value := getattr(args, name)) is not None}
    if getattr(args, "scenarios", None) is not None:
        if given:
            raise ScenarioError(f"--scenarios {args.scenarios} and {', '.join('--' + k for k in given)} both name "
                                "the scenarios: pass one (write the steps as HxW@STEPS)")
        return parse_scenarios(args.scenarios)
    resolution = given.pop("resolution", None)
    if resolution is not None:
        height, width = parse_resolution(resolution)
        return (Scenario(height, width, **{"steps": 6, **given}),)
    if given:
        raise ScenarioError(f"{', '.join(f'--{k} {v}' for k, v in given.items())} applies to --resolution only: "
                            "pass --resolution N as well, or --scenarios HxW@STEPS")
    return parse_scenarios(None)


def baselines_dir(args) -> Path:
    from ..gate.budgets import BudgetsError
    from ..store.folders import folder_problem, shown

    path = typed_path(args.baselines_dir) if args.baselines_dir else default_baselines_dir()  # from the cwd
    problem = folder_problem(path, writable=False)
    if problem:
        raise BudgetsError(f"--baselines-dir {shown(path)} {problem}")
    if not path.exists():
        raise BudgetsError(f"--baselines-dir {shown(path)} does not exist")
    if not (path / "budgets.toml").is_file():
        hint = "" if args.baselines_dir else " (flux-perf is not running from a checkout: pass --baselines-dir)"
        raise BudgetsError(f"no budgets.toml in {path}{hint}")
    return path


def suite(args, *, stacks, scenarios, update=False, force=False) -> SuiteConfig:
    from ..components.stacks import parse_stacks
    from ..instrument.measure import MeasureSettings
    from ..model.pipeline import check_device, check_device_name, default_device

    rounds = getattr(args, "rounds", 1)  # calibrate times no rounds and writes no report
    if rounds < 1:
        raise ConfigError(f"--rounds {rounds}: need at least 1 timed round")
    device = args.device or default_device()
    check_device_name(device)
    check_device(device)
    config = SuiteConfig(
        model=args.model, device=device, stacks=parse_stacks(stacks), scenarios=scenarios,
        measure=MeasureSettings(rounds=rounds, max_rounds=rounds,
                                telemetry_interval_s=getattr(args, "telemetry_interval", TELEMETRY_INTERVAL_S)),
        strict=False,
        report_dir=typed_path(args.report_dir) if hasattr(args, "report_dir") else None,
        baselines_dir=baselines_dir(args), update_baselines=update, force_update=force,
    )
    config.check_destinations()
    return config


def run_cases(session, cases, config, *, show=None, skipped=()) -> int:
    """Measure every case with a progress line each. The report is written as each case finishes
    and once more at the end, whatever happens: an error, Ctrl-C or SIGTERM keeps every case that
    finished, and the run is marked interrupted. `skipped` (stack, scenario, reason): the cases this
    machine cannot run, kept in the report (after the count of an interruption, which they are not
    part of). Exit 1 when a case failed or the report could not be written, 128 + the signal's number
    when a signal stopped the run."""
    from ..suite import interrupts
    from ..report.summary import ReportError, summary_instead, write_report

    failed = interrupted = False
    unwritten = None  # the first failed write mid-run, said once: the measurements are in memory
    try:
        for number, (stack, scenario) in enumerate(cases, 1):
            progress(f"[{number}/{len(cases)}] {stack.name} at {scenario.id}")
            result = session.case(stack, scenario)
            if result.error:
                print(f"\n{result.id}: FAILED: {result.error}", file=sys.stderr)
                failed = True
            elif show:
                show(result)
            try:
                write_report(session.results(), config.report_dir, plots=False)
            except ReportError as error:
                if unwritten is None:
                    progress(f"{error}; measuring goes on, the report is tried again at the end")
                unwritten = error
    except KeyboardInterrupt as error:
        interrupted = True
        cut = session.mark_interrupted(len(cases), error)  # the runnable cases given, not every stack asked for
        print(f"\n{cut}: writing the report of the cases that finished", file=sys.stderr)
    finally:
        for stack, scenario, reason in skipped:
            session.record_skip(stack, scenario, reason)
        with interrupts.deferred():  # a second signal must not cut the final report short
            try:
                paths = write_report(session.results(), config.report_dir, log=progress)
                print(f"\nreport: {paths['results']}")
            except ReportError as error:
                summary, line = summary_instead(session.results(), error)
                print(summary)
                print(f"flux-perf: {line}", file=sys.stderr)
                failed = True
    return interrupts.exit_status() if interrupted else 1 if failed else 0
