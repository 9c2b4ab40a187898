"""The pytest plugin's side of the report: SIGTERM is taken as Ctrl-C (the run ends through
pytest's KeyboardInterrupt path and is marked interrupted; a run -x or --sw stopped says so), a
failed write of the report is one line naming the folder and the OS error, with the summary
printed to the terminal instead and a failing exit status, and the terminal's flux-perf section
names each case not judged once."""

from __future__ import annotations

import shlex

import pytest

from ..suite import interrupts

_SIGNALS_KEY = pytest.StashKey["object"]()  # the signal handlers before ours
_UNWRITTEN_KEY = pytest.StashKey["object"]()  # the ReportError of the last write, None once one worked
_UNASSERTED_KEY = pytest.StashKey["list"]()  # cases the records fail that no test of this run failed


def catch_signals(config) -> None:
    config.stash[_SIGNALS_KEY] = interrupts.install()


def release_signals(config) -> None:
    if _SIGNALS_KEY in config.stash:
        interrupts.restore(config.stash[_SIGNALS_KEY])
        del config.stash[_SIGNALS_KEY]


def unwritten(config):
    return config.stash.get(_UNWRITTEN_KEY, None)


def write(flux, config, plots: bool) -> dict:
    """The report as it stands (after each test, and at the end); a failure is said once."""
    from ..report.summary import ReportError, write_report

    try:
        written = write_report(flux.results(), flux.config.report_dir, plots=plots, log=flux.log)
    except ReportError as error:
        if not unwritten(config):
            flux.log(f"{error}; the report is tried again at the end")
        config.stash[_UNWRITTEN_KEY] = error
        return {}
    config.stash[_UNWRITTEN_KEY] = None
    return written


def write_final(session, flux, passing: tuple) -> dict:
    """The last write, whole even if a second signal comes; a run whose report is lost fails."""
    with interrupts.deferred():
        written = write(flux, session.config, plots=True)
    if not written and session.exitstatus in passing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return written


def mark_stopped(session, flux, selected: int) -> None:
    """A run that ended before its selection says what stopped it. --sw stops at a failure through
    pytest's Interrupted (exit 2, as Ctrl-C): it read `interrupted by KeyboardInterrupt`."""
    if session.exitstatus == pytest.ExitCode.INTERRUPTED and (interrupts.received() or not session.shouldstop):
        flux.mark_interrupted(selected)  # a signal: Ctrl-C, SIGTERM
    elif session.shouldfail:  # -x, --maxfail: the cases after the failure never ran
        flux.mark_interrupted(selected, by=f"-x/--maxfail ({session.shouldfail})")
    elif session.shouldstop:
        stepwise = session.config.getoption("stepwise", False)
        flux.mark_interrupted(selected, by=f"--sw ({session.shouldstop})" if stepwise else str(session.shouldstop))


def fail_unasserted(session, flux, passing: tuple) -> None:
    """A case the records fail (a FAIL, a missing reference, an error) fails the run even when the
    test that asserts it was deselected (`-k fidelity`), skipped or not run: the report shows it, so
    exit 0 or 6 would read green beside it."""
    failed = [f"{r.id}: {', '.join(r.failures())} in the report, and no test of this run failed it "
              f"({_not_run(session, r.id)})" for r in flux.records.values() if r.failures()]
    if failed and session.exitstatus in passing:
        session.config.stash[_UNASSERTED_KEY] = failed
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _not_run(session, case_id: str) -> str:
    """Why no test of the case failed it, as pytest saw its tests: --setup-only ran none (a fixture
    measured the case), --benchmark-skip skipped the latency test, or the selection left them out."""
    from .scope import item_case_id

    if session.config.option.setuponly:
        return "its test did not run: --setup-only ran only its fixtures"
    ours = {item.nodeid for item in session.items if item_case_id(item) == case_id}
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = sorted({str(report.longrepr[2]).removeprefix("Skipped: ") for report in
                      (reporter.stats.get("skipped", []) if reporter else []) if report.nodeid in ours
                      and isinstance(report.longrepr, tuple)})
    return f"its test did not run: skipped ({'; '.join(skipped)})" if skipped else "its test was not selected"


def _summary_lines(flux, results, config, paths: dict | None, listed: list) -> list[tuple[str, dict]]:
    """(line, markup): the summary, from memory (the file may not exist), then where it went."""
    from ..report.summary import summary_instead, summary_markdown

    error = unwritten(config)
    summary, failure = (summary_instead(results, error, listed) if error
                        else (summary_markdown(results, listed), ""))
    lines = [(line, {}) for line in summary.splitlines()]
    lines += [(f"reference updated: {message}", {}) for message in flux.baseline_updates]
    if failure:
        lines.append((f"FAILED: {failure}", {"red": True}))
    else:
        lines.append((f"report: {', '.join(str(p) for p in (paths or {}).values())}", {}))
    return lines


def section_lines(flux, config, paths: dict | None, undecided: list, listed: list) -> list[tuple[str, dict]]:
    """(line, markup) of the terminal's flux-perf section, none without a report. Each case not
    judged is named once: in the exit-6 list (`listed`, left out of the summary above it), else in
    the summary; an INCONCLUSIVE or DISTURBED test's own line (`undecided`), under its own outcome's
    name, only for a case the summary does not name (a project's own test raising Inconclusive or
    Disturbed)."""
    from ..report.judged import EXIT_NOT_JUDGED, not_judged_in

    if not (paths or unwritten(config)):
        return []
    results, yellow = flux.results(), {"yellow": True}
    named = {item.case_id for item in not_judged_in(results)}
    lines = [(f"NO REFERENCES: {flux.unrecorded}", {"red": True})] if flux.unrecorded else []
    lines += [(f"{report.flux_outcome.upper()} {report.nodeid}: {report.longrepr[2]}", yellow) for report in undecided
              if report.flux_inconclusive not in named]
    lines += _summary_lines(flux, results, config, paths, listed)
    if flux.config.enforce_targets and not any(r.target for r in results.records):
        lines.append(("--flux-enforce-targets: no case of this run has a target for this GPU in the budgets "
                      "file ([latency.targets]); nothing was enforced", yellow))
    lines += [(f"FAILED: {case}", {"red": True}) for case in config.stash.get(_UNASSERTED_KEY, [])]
    if listed:
        heading = f"exit {EXIT_NOT_JUDGED}: nothing failed, but {len(listed)} case(s) could not be judged"
        lines.append((f"{heading} (--flux-strict fails them):", yellow))
        lines += [(f"  {item.line()}" + (f"; {item.more}" if item.more else ""), yellow) for item in listed]
        lines += _next_step(listed, (paths or {}).get("results"))
    return lines


def _next_step(listed: list, results_path) -> list[tuple[str, dict]]:
    """What decides the latency cases left undecided: the interleaved A/B on this machine, which
    reads them from this run's results.json (an exit 6 without a next step leaves a CI log to guess)."""
    decidable = [item.case_id for item in listed if item.resolvable_by_ab]
    if not decidable or results_path is None:
        return []
    return [(f"  decide {', '.join(decidable)} on this machine with the interleaved A/B against the base: "
             f"flux-perf ab --base <checkout of the reference's code> --head . --undecided-from "
             f"{shlex.quote(str(results_path))}", {"yellow": True})]
