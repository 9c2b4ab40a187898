"""The latency judge on made-up rounds: one-sided verdicts (faster always passes), the exact
two-sample interval against the recorded rounds, detection limits, missing references, and the
error shared over the looks."""

import statistics

import pytest

from flux_perf.gate.budgets import LatencyBudget
from flux_perf.gate.latency import Verdict, check_budget, decided, describe_warmup_drift, judge_latency
from flux_perf.gate.stats import look_confidence, two_sample_ratio
from flux_perf.instrument.rounds import summarize

RECORDED = tuple(1.0 + 0.002 * i for i in range(8))  # a quiet reference: 1.000-1.014 s


def relative(tolerance=0.03, recorded=RECORDED, stale=()):
    median = sorted(recorded)[len(recorded) // 2]
    return LatencyBudget(median * (1 + tolerance), "relative", "recorded", tolerance, recorded, stale=stale,
                         reference_s=median)


def scaled(factor, spread=0.002, n=8):
    return [factor * (1.0 + spread * i) for i in range(n)]


def test_slower_beyond_the_tolerance_fails_and_inside_it_passes():
    assert judge_latency(scaled(1.10), [relative()]).verdict is Verdict.FAIL
    assert judge_latency(scaled(1.00), [relative()]).verdict is Verdict.PASS


def test_faster_is_never_a_failure_nor_inconclusive():
    """fp8-512x512@4 measured 5 % under its reference on the H100 and was `inconclusive`: the old
    verdict was two-sided. Faster passes and says by how much."""
    for factor in (0.95, 0.80, 0.50):
        result = judge_latency(scaled(factor), [relative()], strict=True)
        assert result.verdict is Verdict.PASS and not result.failed
        assert result.faster_by == pytest.approx(1 - factor, abs=0.01)
    assert judge_latency(scaled(0.995), [relative()]).faster_by is None, "within the tolerance: not called faster"


def test_straddling_the_budget_is_inconclusive_and_fails_only_under_strict():
    noisy = [1.03 * x for x in (0.97, 1.04, 0.99, 1.05, 0.96, 1.03, 1.0, 1.02)]
    result = judge_latency(noisy, [relative()])
    assert result.verdict is Verdict.INCONCLUSIVE and not result.failed
    assert judge_latency(noisy, [relative()], strict=True).failed


def test_the_detection_limit_is_the_smallest_slowdown_the_run_would_fail():
    """Scale the rounds up until the verdict turns to FAIL: that happens where the judge said."""
    quiet = scaled(1.0, spread=0.002)
    limit = judge_latency(quiet, [relative()]).detection_limit
    assert 0.03 < limit < 0.05, "the 3 % tolerance plus this run's own interval"
    assert judge_latency([x * (1 + limit) * 1.002 for x in quiet], [relative()]).verdict is Verdict.FAIL
    assert judge_latency([x * (1 + limit) * 0.995 for x in quiet], [relative()]).verdict is not Verdict.FAIL
    noisy = scaled(1.0, spread=0.02)
    assert judge_latency(noisy, [relative()]).detection_limit > limit, "noisier rounds see less"


def test_an_absolute_budget_is_judged_by_the_medians_interval():
    budget = LatencyBudget(1.2, "absolute", "budgets.toml")
    assert check_budget(scaled(1.0), budget, 0.95).verdict is Verdict.PASS
    assert check_budget(scaled(1.3), budget, 0.95).verdict is Verdict.FAIL
    check = check_budget(scaled(1.0), budget, 0.95)
    # The rounds scaled until the interval's low end reaches the budget: median x budget / low end.
    assert check.fails_from_s == pytest.approx(1.2 * 1.007 / check.low_s)
    both = judge_latency(scaled(1.0), [relative(), budget])
    assert both.fails_from_s == min(c.fails_from_s for c in both.checks), "the tighter budget sees more"


def test_a_missing_reference_fails_naming_the_command_unless_recording():
    result = judge_latency(scaled(1.0), [], missing="no recorded latency ...: record it with `flux-perf ...`")
    assert result.verdict is Verdict.NO_REFERENCE and result.failed and "record it with" in result.missing
    absolute = LatencyBudget(1.2, "absolute", "budgets.toml")
    assert judge_latency(scaled(1.0), [absolute], missing="none").verdict is Verdict.NO_REFERENCE, \
        "an absolute budget alone is no regression gate"
    assert judge_latency(scaled(1.3), [absolute], missing="none").verdict is Verdict.FAIL
    assert judge_latency(scaled(1.0), [], missing="none", recording=True).verdict is Verdict.RECORDED


def test_a_disturbance_never_hides_a_missing_reference():
    """A case with no recorded latency fails until one is recorded; DISTURBED is not a failure (exit
    6, handed to the A/B, which records nothing), so slow rounds over an absolute budget on a
    disturbed machine must not turn the missing reference into it."""
    absolute = LatencyBudget(1.2, "absolute", "budgets.toml")
    for samples in (scaled(1.3), [1.0, 1.4, 1.1, 1.3, 1.2, 1.25, 1.15, 1.35]):  # over the budget, at its edge
        result = judge_latency(samples, [absolute], disturbance=("another process on the GPU",), missing="none")
        assert result.verdict is Verdict.NO_REFERENCE and result.failed and result.missing == "none"
    assert judge_latency(scaled(1.3), [absolute], disturbance=("x",)).verdict is Verdict.DISTURBED, "with a reference"


def test_a_reference_without_rounds_is_judged_against_its_median():
    old = LatencyBudget(1.03, "relative", "recorded 1.000 s + 3%", 0.03, (), reference_s=1.0)
    assert judge_latency(scaled(1.0), [old]).verdict is Verdict.PASS
    assert judge_latency(scaled(1.1), [old]).verdict is Verdict.FAIL


def test_a_reference_of_one_or_two_rounds_can_still_fail():
    """Two rounds against one cannot reach the first look's confidence whatever the rounds say: such
    a reference (`--rounds 1`) is judged against its median, or it would never fail again."""
    for recorded in ((1.0,), (1.0, 1.001)):
        assert judge_latency(scaled(2.0), [relative(recorded=recorded)]).verdict is Verdict.FAIL
        assert judge_latency(scaled(1.0), [relative(recorded=recorded)]).verdict is Verdict.PASS


def test_each_look_spends_part_of_the_error_and_more_rounds_decide():
    assert look_confidence(0.95, 3) == pytest.approx(1 - 0.05 / 3)
    edge = [1.03 * x for x in (0.99, 1.01, 0.995, 1.005, 0.99, 1.01, 1.0, 1.0)]
    assert not decided(edge, [relative()], looks=3)
    assert decided(scaled(1.0), [relative()], looks=3)
    assert decided(scaled(1.0), [], looks=3), "no budget: nothing to wait for"


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -0.9, float("inf")])
def test_rounds_no_timer_gives_are_refused_naming_them(bad):
    """A NaN or zero round (a broken timer) crashed the judge inside statistics.stdev or with a
    division by zero, or slipped into a verdict: it is refused, naming the round."""
    rounds = [bad] + [0.9] * 7
    with pytest.raises(ValueError, match=rf"round 1 of 8 is {bad!r}: rounds must be positive, finite seconds"):
        summarize(rounds)
    for budget in (LatencyBudget(1.0, "absolute", "x"), relative(recorded=(0.9,) * 8)):
        with pytest.raises(ValueError, match=rf"round 1 of 8 is {bad!r}"):
            judge_latency(rounds, [budget], looks=3)
    with pytest.raises(ValueError, match=rf"round 1 of 8 is {bad!r}"):
        judge_latency(rounds, [], recording=True)
    with pytest.raises(ValueError, match=rf"samples: round 8 of 8 is {bad!r}: rounds must be positive, finite seconds"):
        two_sample_ratio([0.9] * 8, [0.9] * 7 + [bad])


def test_stale_reasons_travel_with_the_verdict():
    result = judge_latency(scaled(1.0), [relative(stale=("torch 2.10 -> 2.11",))])
    assert result.stale == ("torch 2.10 -> 2.11",) and result.verdict is Verdict.PASS


def test_a_recording_on_a_disturbed_machine_is_disturbed_whatever_the_rounds_say():
    """An update never keeps rounds timed beside another process: its verdict says so at the judge."""
    result = judge_latency(scaled(1.0), [], disturbance=("another process on the GPU",), recording=True)
    assert result.verdict is Verdict.DISTURBED and result.disturbance == ("another process on the GPU",)
    assert judge_latency(scaled(1.0), [], recording=True).verdict is Verdict.RECORDED
    assert judge_latency(scaled(1.0), [relative()], disturbance=("x",)).verdict is Verdict.PASS  # a fast case stands


# fp8-512x512@6 on the H100 in the eleventh session (docs/results/gate-session11.json): the same
# code as its reference (0.357 s, 8 rounds, + 10 %), warm-up calls at reference speed, then timed
# rounds 47 % slower on a card left idle a third of the time.
FP8_RECORDED = (0.355024, 0.355282, 0.355937, 0.357882, 0.358486, 0.357724, 0.356399, 0.357036)
FP8_WARMUP = (0.399, 0.447, 0.432, 0.366, 0.364)
FP8_TIMED = (0.6036, 0.5645, 0.5532, 0.5256, 0.5315, 0.4664, 0.5048, 0.5377)


def test_a_slow_down_that_set_in_after_the_warm_up_is_the_machine_not_the_code():
    budget = relative(0.10, FP8_RECORDED)
    assert judge_latency(FP8_TIMED, [budget]).verdict is Verdict.FAIL, "without the warm-up: taken for the code"
    why = describe_warmup_drift(FP8_WARMUP, statistics.median(FP8_TIMED), [budget])
    assert why is not None and "46% slower than this case's last warm-up calls" in why and "(0.366 s" in why
    result = judge_latency(FP8_TIMED, [budget], disturbance=[why])
    assert result.verdict is Verdict.DISTURBED and not result.failed and result.disturbance == (why,)


def test_a_regression_slows_the_warm_up_too_and_still_fails():
    budget = relative(0.10, FP8_RECORDED)
    assert describe_warmup_drift((0.60, 0.54, 0.53), 0.535, [budget]) is None, "warm-up over the budget: the code"
    assert describe_warmup_drift((0.37, 0.366), 0.40, [budget]) is None, "9 % above the warm-up: within the drift"
    assert describe_warmup_drift((0.366,), 0.535, [budget]) is None, "one warm-up call is no evidence"
    assert describe_warmup_drift((0.37, 0.366), 0.535, []) is None, "nothing to judge against"
    absolute = LatencyBudget(0.36, "absolute", "budgets.toml")
    assert describe_warmup_drift((0.37, 0.366), 0.535, [budget, absolute]) is None, "over the strictest budget"


def test_a_recording_refuses_drifted_rounds_even_when_its_warm_up_is_over_an_absolute_budget():
    """An update keeps budgets.toml's absolute budget (H100 fast at 512x512@6: 0.34 s). A stack
    whose warm-up already ran over it is no evidence against a recording's drift: rounds 45 % slower
    than that warm-up would still become a reference too slow for every later run. Only the gate's
    (non-recording) drift needs a budget to vouch for the warm-up."""
    absolute = LatencyBudget(0.34, "absolute", "budgets.toml")
    why = describe_warmup_drift((0.37, 0.366), 0.535, [absolute], recording=True)
    assert why is not None and "45% slower than this case's last warm-up calls" in why
    assert "within the" not in why, "the warm-up was over the budget: never said to be within it"
    assert describe_warmup_drift((0.37, 0.366), 0.535, [absolute]) is None, "the gate: the code, as before"
    assert describe_warmup_drift((0.37, 0.366), 0.40, [absolute], recording=True) is None, "within the drift"
