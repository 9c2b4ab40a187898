"""`flux-perf table`: several runs' results.json merged into one Markdown table."""

from __future__ import annotations

import json


def register(sub) -> None:
    parser = sub.add_parser("table", help="merge results.json files into one Markdown table")
    parser.add_argument("results", nargs="+")
    parser.add_argument("--kind", choices=("components", "physics"), default="components",
                        help="components: latency, step, speed-up, compile, memory, SSIM; "
                             "physics: TFLOP/s and fraction of the matmul ceilings")
    parser.add_argument("--stacks", default=None, help="comma-separated stack names to keep")
    parser.add_argument("--scenarios", default=None, help="comma-separated scenario ids to keep (e.g. 512x512@6)")
    parser.add_argument("--json", action="store_true", help="the component rows and what could not run, as JSON")
    parser.set_defaults(func=run)


def _check_filters(runs, stacks: set[str] | None, scenarios: set[str] | None) -> None:
    """A name no run holds (a typo, an id like 500x500@6) would print an empty table and exit 0."""
    from ..suite.config import ConfigError

    cases = [(r.stack, r.scenario_id) for run in runs for r in run.results.records]
    cases += [(s["stack"], s["scenario"]) for run in runs for s in run.results.skipped]
    for option, wanted, held in (("--stacks", stacks, {c[0] for c in cases}),
                                 ("--scenarios", scenarios, {c[1] for c in cases})):
        unknown = sorted((wanted or set()) - held)
        if unknown:
            raise ConfigError(f"{option}: {', '.join(unknown)} is in none of these runs; they hold "
                              f"{', '.join(sorted(held)) or 'no case'}")


def run(args) -> int:
    from ..report.format import skipped_table
    from ..report.tables import component_rows, component_table, failed_cases, load_runs, physics_table

    stacks = set(args.stacks.split(",")) if args.stacks else None
    scenarios = set(args.scenarios.split(",")) if args.scenarios else None

    def kept(stack: str, scenario: str) -> bool:
        return (stacks is None or stack in stacks) and (scenarios is None or scenario in scenarios)

    runs = load_runs(args.results)
    _check_filters(runs, stacks, scenarios)
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
