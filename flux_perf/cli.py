"""`flux-perf`: ad-hoc runs, the list of stacks, baseline updates, calibration, run comparison,
tables, step accounts and the interleaved A/B gate. One module per subcommand in commands/;
this file only builds the parser and dispatches."""

from __future__ import annotations

import argparse
import sys

from .quiet import quiet_library_notices

quiet_library_notices()  # before the commands import torch and the rest: they log while importing
from .commands import ab, account, baselines, calibrate, compare, run, stacks, table  # noqa: E402

SUBCOMMANDS = (run, stacks, baselines, calibrate, account, compare, table, ab)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flux-perf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .instrument.environment import apply_guide_environment

    args.environment = apply_guide_environment()  # before CUDA initialises
    from .ab.worker import AbError
    from .components import ComponentError
    from .config import ConfigError
    from .gate.budgets import BudgetsError
    from .model.models import ModelSourceError
    from .model.pipeline import DeviceError
    from .model.scenarios import ScenarioError
    from .report.records import ResultsError
    from .store.entries import BaselineError

    try:
        return args.func(args)
    except (ScenarioError, ComponentError, ModelSourceError, DeviceError, BudgetsError, BaselineError,
            ResultsError, ConfigError, AbError, ValueError) as error:
        print(f"flux-perf: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
