"""`--lf` re-runs the cases the last run could not judge, not only its failures.

pytest's last-failed list (its cache provider) holds failures only, and it drops a test whose
report is skip-like, which INCONCLUSIVE, DISTURBED and GAP are (plugin/outcomes.py). Without this a
run that exited 6 and was re-run with `--lf` left its undecided cases out, or re-ran everything
when nothing had failed. Only pytest's public cache API is used.
"""

from __future__ import annotations

import pytest

from .outcomes import NOT_JUDGED_LETTERS

PLUGIN_NAME = "flux-perf-lastfailed"
_CACHE_KEY = "cache/lastfailed"  # the key pytest's cache provider reads for --lf


class NotJudgedAsLastFailed:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.not_judged: list[str] = []  # node ids, in the order they ran

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if getattr(report, "flux_outcome", None) in NOT_JUDGED_LETTERS:
            self.not_judged.append(report.nodeid)

    @pytest.hookimpl(trylast=True)  # after the cache provider has written its own list
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        cache = getattr(self.config, "cache", None)
        if not self.not_judged or cache is None or hasattr(self.config, "workerinput"):
            return  # -p no:cacheprovider, or an xdist worker (the controller writes the cache)
        last_failed = cache.get(_CACHE_KEY, {})
        cache.set(_CACHE_KEY, {**last_failed, **dict.fromkeys(self.not_judged, True)})


def register(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(NotJudgedAsLastFailed(config), PLUGIN_NAME)
