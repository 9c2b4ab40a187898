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
    from ..report.compare import compare_files, format_rows, verdict_of_comparison

    rows = compare_files(args.base, args.head, args.tolerance)
    print(format_rows(rows, args.tolerance))
    code, why = verdict_of_comparison(rows)
    if why:
        print(f"\n{why}", file=sys.stderr)
    return code
