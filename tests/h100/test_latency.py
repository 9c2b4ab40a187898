"""Latency gates: every stack x scenario against its budget (absolute for `fast`, its own
recorded latency otherwise). Timed rounds go through pytest-benchmark's fixture."""

import warnings

import pytest

from flux_perf.stats import Verdict

pytestmark = pytest.mark.h100


def test_latency_budget(flux_result, benchmark):
    result = flux_result
    assert result.error is None, result.error
    latency, wall = result.latency, result.timed.wall
    telemetry = result.timed.telemetry.summary() if result.timed.telemetry else {}
    clock = (telemetry.get("sm_clock_mhz") or {}).get("median")
    measured = (f"{result.id}: median {wall.median:.3f} s, 95% CI {wall.ci_low:.3f}-{wall.ci_high:.3f} s "
                f"over {wall.n} rounds" + (f" at SM clock {clock:.0f} MHz" if clock else ""))
    if latency.verdict is Verdict.NO_BUDGET:
        pytest.skip(f"{measured}; no latency budget for this GPU/scenario/stack and no recorded latency "
                    "(record one with --flux-update-baselines)")
    budget, failed = latency.budget, latency.failed
    assert not failed, f"{measured} is over budget {budget.seconds:.3f} s ({budget.source}): {latency.verdict.value}"
    if latency.verdict is Verdict.INCONCLUSIVE:
        warnings.warn(f"{measured}: inconclusive against budget {budget.seconds:.3f} s even after "
                      f"{wall.n} rounds (use --flux-strict to fail on this)", stacklevel=1)
    for note in result.timed.notes:
        warnings.warn(f"{result.id}: {note}", stacklevel=1)
