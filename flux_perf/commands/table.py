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


def _names(option: str, text: str | None) -> set[str] | None:
    """A filter's names (None: no filter). `--stacks ""` (an unset "$VAR") names none: refused, as
    for every command (it was read as no filter); a scenario is read as runs name it (512@6)."""
    from ..model.scenarios import ScenarioError, parse_scenario
    from ..suite.config import ConfigError

    if text is None:
        return None
    names = {name.strip() for name in text.split(",") if name.strip()}
    if not names:
        raise ConfigError(f"{option} {text!r}: names nothing; name one or more, or leave {option} out for all")
    if option == "--scenarios":
        try:
            names = {parse_scenario(name).id for name in names}
        except ScenarioError as error:
            raise ConfigError(f"{option} {text}: {error}") from None
    return names


def run(args) -> int:
    from ..report.format import skipped_table
    from ..report.tables import component_rows, component_table, failed_cases, load_runs, physics_table
    from ..suite.config import ConfigError

    if args.json and args.kind != "components":  # --json writes the component rows only
        raise ConfigError(f"--kind {args.kind} with --json: --json writes the component rows; leave one of them out")
    stacks, scenarios = _names("--stacks", args.stacks), _names("--scenarios", args.scenarios)

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
