"""Latency gates: every stack x scenario against its own recorded reference on this GPU model
(and the absolute budgets of budgets.toml). Timed rounds go through pytest-benchmark's fixture.
A disturbed machine errors in `flux_latency` (never a failure); the guide's targets are reported
and fail only under --flux-enforce-targets."""

import warnings

import pytest

from flux_perf.stats import Verdict

pytestmark = pytest.mark.h100


def test_latency_budget(flux_result, flux_latency, benchmark, request):
    result, latency = flux_result, flux_latency
    assert result.error is None, result.error
    wall = result.timed.wall
    telemetry = result.timed.telemetry.summary() if result.timed.telemetry else {}
    clock = (telemetry.get("sm_clock_mhz") or {}).get("median")
    measured = (f"{result.id}: median {wall.median:.3f} s, 95% CI {wall.ci_low:.3f}-{wall.ci_high:.3f} s "
                f"over {wall.n} rounds" + (f" at SM clock {clock:.0f} MHz" if clock else ""))
    if latency.verdict is Verdict.NO_BUDGET:
        pytest.skip(f"{measured}; no latency budget for this GPU/scenario/stack and no recorded reference "
                    "(record one with --flux-update-baselines)")
    budget = latency.budget
    stale = f" (reference stale: {'; '.join(latency.stale)})" if latency.stale else ""
    assert not latency.failed, (f"{measured} is over budget {budget.seconds:.3f} s ({budget.source}): "
                                f"{latency.verdict.value}{stale}")
    if latency.verdict is Verdict.INCONCLUSIVE:
        warnings.warn(f"{measured}: inconclusive against budget {budget.seconds:.3f} s even after "
                      f"{wall.n} rounds (use --flux-strict to fail on this)", stacklevel=1)
    if stale:
        warnings.warn(f"{result.id}: judged against a stale reference{stale}; re-record it on purpose", stacklevel=1)
    for note in result.timed.notes:
        warnings.warn(f"{result.id}: {note}", stacklevel=1)
    target = result.target
    if target and not target["met"] and request.config.getoption("flux_enforce_targets"):
        pytest.fail(f"{measured}: misses the guide's target {target['seconds']:.2f} s by {target['gap_s']:.3f} s")
