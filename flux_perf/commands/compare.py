"""`flux-perf compare`: two recorded runs of the same GPU and weights, case by case."""

from __future__ import annotations

import sys


def register(sub) -> None:
    parser = sub.add_parser("compare", help="compare two results.json files; exit 1 on a real "
                                                 "regression, 6 when a case stays undecided")
    parser.add_argument("base")
    parser.add_argument("head")
    parser.add_argument("--tolerance", type=float, default=0.03, help="relative change treated as noise (default 0.03)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..gate.stats import Change
    from ..report.compare import DISTURBED, UNMEASURED_IN_BASE, compare_files, format_rows, has_regression, nothing_compared
    from ..report.judged import EXIT_NOT_JUDGED

    rows = compare_files(args.base, args.head, args.tolerance)
    print(format_rows(rows, args.tolerance))
    if has_regression(rows):
        print("\nregression: a case is slower beyond the tolerance with confidence, or the head lost it",
              file=sys.stderr)
        return 1
    undecided = [row["id"] for row in rows if row.get("change") == Change.INCONCLUSIVE.value]
    if undecided:  # an interval that straddles the tolerance decided nothing: never exit 0
        print(f"\nnot decided: {', '.join(undecided)}: more rounds in both runs decide it", file=sys.stderr)
        return EXIT_NOT_JUDGED
    disturbed = [row["id"] for row in rows if row.get("change") == DISTURBED]
    if disturbed:  # rounds the machine slowed judge nothing about the code: never exit 0
        print(f"\nnot judged: {', '.join(disturbed)}: disturbed rounds; compare runs of a quiet machine",
              file=sys.stderr)
        return EXIT_NOT_JUDGED
    unmeasured = [row["id"] for row in rows if row.get("change") == UNMEASURED_IN_BASE]
    if unmeasured:  # the base errored there: the head's rounds were compared with nothing
        print(f"\nnot judged: {', '.join(unmeasured)}: the base run did not measure it (an error, or no timed "
              "rounds); measure the base again", file=sys.stderr)
        return EXIT_NOT_JUDGED
    empty = nothing_compared(rows)
    if empty:  # no verdict at all, e.g. a base with no case against a full head: never exit 0
        print(f"\nnothing compared: {empty}", file=sys.stderr)
        return EXIT_NOT_JUDGED
    return 0
