"""The pytest plugin's side of a run cut short or a report that cannot be written: SIGTERM is
taken as Ctrl-C (the run ends through pytest's KeyboardInterrupt path and is marked interrupted),
and a failed write of the report is one line naming the folder and the OS error, with the
summary printed to the terminal instead and a failing exit status."""

from __future__ import annotations

import pytest

from . import interrupts

_SIGNALS_KEY = pytest.StashKey["object"]()  # the signal handlers before ours
_UNWRITTEN_KEY = pytest.StashKey["object"]()  # the ReportError of the last write, None once one worked


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
    from .report.summary import ReportError, write_report

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


def summary_lines(flux, config, paths: dict | None) -> list[tuple[str, dict]]:
    """(line, markup): the summary, from memory (the file may not exist), then where it went."""
    from .report.summary import summary_instead, summary_markdown

    results, error = flux.results(), unwritten(config)
    summary, failure = summary_instead(results, error) if error else (summary_markdown(results), "")
    lines = [(line, {}) for line in summary.splitlines()]
    lines += [(f"reference updated: {message}", {}) for message in flux.baseline_updates]
    if failure:
        lines.append((f"FAILED: {failure}", {"red": True}))
    else:
        lines.append((f"report: {', '.join(str(p) for p in (paths or {}).values())}", {}))
    return lines
