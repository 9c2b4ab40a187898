"""`flux-perf`: ad-hoc runs, the list of stacks, baseline updates, calibration, run comparison,
tables, step accounts and the interleaved A/B gate. One module per subcommand in commands/;
this file only builds the parser and dispatches."""

from __future__ import annotations

import argparse
import os
import sys

from .quiet import quiet_library_notices
from .suite import interrupts

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
    from .suite.config import ConfigError
    from .gate.budgets import BudgetsError
    from .model.models import ModelSourceError
    from .model.pipeline import DeviceError, DeviceNameError
    from .model.prompt_tokens import PromptTokensError
    from .model.scenarios import ScenarioError
    from .report.account import AccountError
    from .report.records import ResultsError
    from .store.entries import BaselineError
    from .report.summary import ReportError

    with interrupts.catching():  # SIGTERM as Ctrl-C: each command keeps what finished
        try:
            return args.func(args)
        # What the user can fix, in one line; any other exception is a bug and shows its traceback.
        except (ConfigError, ScenarioError, ComponentError, ModelSourceError, DeviceError, DeviceNameError,
                PromptTokensError, BudgetsError, BaselineError, ResultsError, AccountError, AbError,
                ReportError) as error:
            print(f"flux-perf: {error}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `flux-perf table ... | head`: the reader left; nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            return 141  # what a shell reports for a process ended by SIGPIPE
        except OSError as error:  # a disk or a folder failing outside the report (a --json file)
            from .store.folders import os_error_line

            print(f"flux-perf: {os_error_line(error)}", file=sys.stderr)
            return 2  # the user's to fix, and never 1: `ab` and `compare` say "slower" with 1
        except KeyboardInterrupt as error:
            print(f"flux-perf: interrupted by {interrupts.describe(error)}", file=sys.stderr)
            return interrupts.exit_status()


if __name__ == "__main__":
    sys.exit(main())
