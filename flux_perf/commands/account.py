"""`flux-perf account`: where a denoising step's time goes, from a --flux-profile trace."""

from __future__ import annotations

from pathlib import Path

from ..suite.values import named


def register(sub) -> None:
    parser = sub.add_parser("account", help="where a denoising step's time goes, from a --flux-profile trace")
    parser.add_argument("trace", help="a chrome trace written by --flux-profile (report/profiles/<case>.json)")
    parser.add_argument("--results", default=None,
                        help="the run's results.json for steps, FLOPs and ceilings (default: the report's own)")
    parser.add_argument("--json", type=named, default=None, help="write the account here")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..report.account import account, account_to_json, format_account, load_context, read_trace
    from ..store.files import write_json

    trace_path = Path(args.trace)
    context = load_context(trace_path, Path(args.results) if args.results else None)
    result = account(read_trace(trace_path), context.steps, context.flops, context.ceilings, context.datasheet)
    print(format_account(result, context.source))
    if args.json:
        write_json(Path(args.json), account_to_json(result, context.source))
    return 0
