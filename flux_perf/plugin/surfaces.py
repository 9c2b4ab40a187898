"""A case not judged where pytest users look after a run, never read as a pass.

- pytest's short test summary (`-rs`, `-ra`, `-rA`): pytest lists only its own outcomes there, so
  an INCONCLUSIVE, DISTURBED or GAP test (outcomes.py) was left out of it, or beside a failure the
  summary named only the failure. Each is listed after pytest's own lines, as pytest lists a skip:
  `INCONCLUSIVE <test> - <reason>`. Not under `-rf`/`-rE` (pytest's default): none is a failure.
- pytest-benchmark's JSON (`--benchmark-json`, `--benchmark-save`): every benchmark there looks
  measured alike, its verdict deep in the record. Its `extra_info` (the documented place for a
  benchmark's own fields) gets `flux_outcome`, the test's outcome (`passed` only for a judged pass),
  and `flux_reason`, the test's message when it did not pass.
- JUnit XML needs nothing: these outcomes are skip-like, so each is a `<skipped>` whose message
  names the case and the reason; `--lf` is lastfailed.py's.
"""

from __future__ import annotations

import re

import pytest

from .outcomes import NOT_JUDGED_LETTERS, Inconclusive

PLUGIN_NAME = "flux-perf-surfaces"
# What pytest's own short summary lists for each -r letter: it writes its header when any is there.
_PYTEST_SHOWN = {"f": "failed", "E": "error", "s": "skipped", "x": "xfailed", "X": "xpassed", "p": "passed"}
_CLASS_PREFIX = re.compile(r"^(?:Inconclusive|Disturbed|FidelityGap): ")


def reason(report) -> str:
    """A skip-like report's message without the exception's class name pytest puts before it."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
    return _CLASS_PREFIX.sub("", text)


def _outcome(report, call) -> str:
    if call.excinfo is not None and call.excinfo.errisinstance(Inconclusive) and not report.failed:
        return call.excinfo.value.outcome
    return report.outcome


class NotJudgedShown:
    def __init__(self) -> None:
        self.not_judged: list = []  # reports, in the order they ran

    def pytest_runtest_logreport(self, report) -> None:
        if getattr(report, "flux_outcome", None) in NOT_JUDGED_LETTERS:
            self.not_judged.append(report)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        benchmark = getattr(item, "funcargs", {}).get("benchmark")
        if report.when != "call" or not hasattr(benchmark, "extra_info"):
            return
        word = _outcome(report, call)
        if "flux_case" not in item.fixturenames and word not in NOT_JUDGED_LETTERS:
            return  # a project's own benchmark
        benchmark.extra_info["flux_outcome"] = word
        benchmark.extra_info["flux_reason"] = None if word == "passed" else _message(report)

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: pytest's short summary is written first
    def pytest_terminal_summary(self, terminalreporter):
        try:
            return (yield)
        finally:
            self._short_summary(terminalreporter)

    def _short_summary(self, reporter) -> None:
        if not (self.not_judged and reporter.hasopt("s")):
            return
        if not any(reporter.stats.get(stat) for char, stat in _PYTEST_SHOWN.items() if reporter.hasopt(char)):
            reporter.write_sep("=", "short test summary info", cyan=True, bold=True)
        for report in self.not_judged:
            reporter.write(report.flux_outcome.upper(), yellow=True)
            reporter.write_line(f" {reporter.config.cwd_relative_nodeid(report.nodeid)} - {reason(report)}")


def _message(report) -> str:
    if report.skipped:
        return reason(report)
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr)


def register(config: pytest.Config) -> None:
    from .lastfailed import register as keep_for_lf

    keep_for_lf(config)  # --lf re-runs INCONCLUSIVE, DISTURBED and GAP tests too
    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(NotJudgedShown(), PLUGIN_NAME)
