"""The interleaved A/B gate: its order, its statistics on planted data, its process plumbing
on the tiny model (no timing asserted: CPUs here are shared and busy)."""

import json
import math
import random

import pytest
from helpers import ROOT, run_flux_perf

from flux_perf.ab import (
    AbCase,
    AbError,
    Block,
    check_checkout,
    controlled,
    foreign_processes,
    format_cases,
    interleaved_order,
    measured_pairs,
    pairs_for,
    split_cores,
    verdict_rates,
)
from flux_perf.gate.stats import Change, paired_comparison


def test_rounds_alternate_abba():
    assert interleaved_order(4) == [("base", "head"), ("head", "base"), ("base", "head"), ("head", "base")]
    # With a control: ABC CBA, so each side is first as often as last against base.
    assert interleaved_order(2, ("base", "head", "control")) == [("base", "head", "control"),
                                                                 ("control", "head", "base")]


def test_same_needs_the_control_seen_slower():
    assert controlled(Change.SAME, Change.SLOWER) == (Change.SAME, None)
    change, why = controlled(Change.SAME, Change.INCONCLUSIVE)
    assert change is Change.INCONCLUSIVE and "control was not seen slower (inconclusive)" in why
    assert controlled(Change.SLOWER, Change.SAME) == (Change.SLOWER, None), "a regression stands on its own"
    assert controlled(Change.INCONCLUSIVE, Change.SLOWER) == (Change.INCONCLUSIVE, None)


def test_a_control_worker_runs_the_heads_code_with_the_planted_slowdown(tmp_path):
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--stacks", "bf16", "--scenarios",
                           "64x64@2", "--block-seconds", "0.001", "--blocks", "1", "--device", "cpu", "--control", "0.5",
                           "--json", str(tmp_path / "ab.json"))
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads((tmp_path / "ab.json").read_text())
    (case,) = data["cases"]
    assert case["error"] is None and data["settings"]["control"] == 0.5
    assert len({case["base"]["pid"], case["head"]["pid"], case["control"]["pid"]}) == 3
    assert case["control"]["code"] == case["head"]["code"], "the control runs the head's code"
    (block,) = case["blocks"]
    # No --pairs: sized from the warm-up's round time, here the floor of 10 pairs.
    assert case["pairs"] == 10 and data["settings"]["pairs"] == "auto"
    assert len(block["control"]["control_s"]) == len(block["base_s"]) == 10
    assert "10 pairs a block (~0 s of rounds" in result.stdout and "30 rounds" in result.stdout
    assert set(measured_pairs(tmp_path / "ab.json")) == {"bf16-64x64@2", "bf16-64x64@2 control"}
    refused = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--control", "2", "--device", "cpu")
    assert refused.returncode != 0 and "control=2.0" in refused.stderr


def _pairs(slowdown: float, noise: float, drift: float, n: int, seed: int):
    """Rounds of a machine whose speed drifts linearly, taken ABBA like the runner takes them."""
    rng = random.Random(seed)
    base, head = [], []
    for i, order in enumerate(interleaved_order(n)):
        for j, side in enumerate(order):
            t = 2 * i + j
            wall = 1.8 * (1 + drift * t) * (1 + rng.gauss(0, noise)) * (slowdown if side == "head" else 1.0)
            (head if side == "head" else base).append(wall)
    return base, head


def test_paired_verdicts_catch_two_percent_and_stay_quiet_on_none():
    # Planted data with the spread measured for CUDA-graph stacks (0.5 % per round) and a 2 %
    # drift over the block: 2 % is called slower every time, no change never is.
    caught = sum(paired_comparison(*_pairs(1.02, 0.005, 0.001, 10, seed), 0.01).change is Change.SLOWER
                 for seed in range(200))
    false = sum(paired_comparison(*_pairs(1.0, 0.005, 0.001, 10, seed), 0.01).change is Change.SLOWER
                for seed in range(200))
    assert caught >= 190 and false == 0


def test_the_interval_covers_the_truth_at_its_level():
    misses = 0
    for seed in range(400):
        comparison = paired_comparison(*_pairs(1.03, 0.01, 0.0, 10, seed), 0.01)
        misses += not comparison.ratio_low <= 1.03 <= comparison.ratio_high
    assert misses / 400 <= 0.07  # 95 % interval (exact Wilcoxon, discrete): about 5 % misses


def test_pairs_fill_the_block_time_so_short_cases_get_more():
    # H100 fast: 0.335 s rounds at 512x512@6, 1.8 s at 1024x1024@8; three sides with a control.
    assert pairs_for(0.335, 3, 60.0) == 60
    assert pairs_for(1.8, 3, 60.0) == 12
    assert pairs_for(1.8, 2, 60.0) == 17
    assert pairs_for(30.0, 2, 60.0) == 10, "never fewer than 10 pairs"
    assert pairs_for(0.001, 2, 60.0) == 200, "capped"
    with pytest.raises(AbError, match="round time nan"):
        pairs_for(float("nan"), 2, 60.0)


@pytest.mark.parametrize("option, value, named", [("--pairs", "1", "pairs=1"), ("--blocks", "0", "blocks=0"),
                                                   ("--block-seconds", "inf", "block_seconds=inf"),
                                                   ("--block-seconds", "-5", "block_seconds=-5.0")])
def test_bad_ab_plans_are_refused_naming_the_value(option, value, named):
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--stacks", "bf16", "--scenarios",
                           "64x64@2", "--device", "cpu", option, value)
    assert result.returncode != 0 and named in result.stderr, result.stderr[-2000:]
    assert "preparing" not in result.stdout + result.stderr, "refused before any worker started"


def test_too_few_pairs_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        paired_comparison([1.0], [1.0], 0.01)


def test_foreign_gpu_processes():
    ours = {101, 102}
    assert foreign_processes([{"pid": 101}, {"pid": 102}], ours) == []
    # In a container NVML may show our workers under host PIDs we cannot see: two such are ours.
    hidden = [{"pid": 9001, "verified": False}, {"pid": 9002, "verified": False}]
    assert foreign_processes(hidden, ours) == []
    third = hidden + [{"pid": 9003, "verified": False, "name": "stress"}]
    assert len(foreign_processes(third, ours)) == 3
    assert foreign_processes([{"pid": 101}, {"pid": 555, "name": "python3"}], ours) == [{"pid": 555, "name": "python3"}]


def test_a_side_must_be_a_checkout(tmp_path):
    with pytest.raises(AbError, match="not a flux-perf checkout"):
        check_checkout(tmp_path, "base")
    assert check_checkout(ROOT, "head") == ROOT


def test_ab_runs_each_side_in_its_own_process_and_keeps_every_round(tmp_path):
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--stacks", "bf16", "--scenarios",
                           "64x64@2", "--pairs", "3", "--blocks", "2", "--device", "cpu", "--json",
                           str(tmp_path / "ab.json"))
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads((tmp_path / "ab.json").read_text())
    (case,) = data["cases"]
    assert case["error"] is None and len(case["blocks"]) == 2 and case["pairs"] == 3
    assert all(len(b["base_s"]) == len(b["head_s"]) == 3 for b in case["blocks"])
    assert case["base"]["pid"] != case["head"]["pid"], "each side has its own process"
    assert case["base"]["code"] == case["head"]["code"] == str(ROOT / "flux_perf")
    assert "[base] first call" in result.stdout and "block 2/2" in result.stdout
    assert case["prepare_s"] > 0 and all(b["seconds"] > 0 for b in case["blocks"])
    assert "12 rounds" in result.stdout, "the rounds and minutes an A/B cost are printed"


def test_a_slowed_card_is_named_beside_the_verdict():
    block = Block([1.0, 1.0], [1.02, 1.02], 1.02, 0.99, 1.05, "inconclusive")
    hot = AbCase("fast", "512x512@6", {}, {}, [block],
                 card={"flags": ["thermal-throttle", "power-throttle"], "sm_clock_mhz": 1200, "temperature_c_max": 90})
    text = format_cases([hot], 0.01)
    assert "card slowed (thermal-throttle; SM clock 1200 MHz, up to 90 C)" in text
    cool = AbCase("fast", "512x512@6", {}, {}, [block], card={"flags": ["power-throttle"]})
    assert "card slowed" not in format_cases([cool], 0.01)
    assert hot.verdict == "inconclusive"


def _ab_file(path, pairs):
    blocks = [{"base_s": [b for b, _ in pairs], "head_s": [h for _, h in pairs]}]
    path.write_text(json.dumps({"cases": [{"stack": "fast", "scenario": "1024x1024@8", "blocks": blocks}]}))
    return path


def test_verdict_rates_show_how_many_pairs_a_change_needs():
    rng = random.Random(1)
    # 2 % slower with 0.8 % spread per pair: few pairs are often inconclusive, many are slower.
    planted = [(1.0, 1.02 * math.exp(rng.gauss(0, 0.008))) for _ in range(60)]
    rates = verdict_rates(planted, [3, 20], 0.01)
    assert rates[20]["slower"] > 0.9 and rates[3]["slower"] < rates[20]["slower"]
    null = [(1.0, math.exp(rng.gauss(0, 0.008))) for _ in range(60)]
    assert verdict_rates(null, [20], 0.01)[20]["slower"] < 0.05


def test_ab_pairs_reads_ab_files_and_refuses_others(tmp_path):
    pairs = [(1.0, 1.03), (1.0, 1.031), (1.0, 1.029), (1.0, 1.032)] * 3
    result = run_flux_perf("ab-pairs", str(_ab_file(tmp_path / "ab.json", pairs)), "--sizes", "8")
    assert result.returncode == 0, result.stderr
    assert "fast-1024x1024@8 (12 pairs): 8: slower 100%" in result.stdout
    (tmp_path / "other.json").write_text("{}")
    result = run_flux_perf("ab-pairs", str(tmp_path / "other.json"))
    assert result.returncode == 2 and "not an `flux-perf ab --json` file" in result.stderr


def test_workers_share_their_cores_and_the_orchestrator_keeps_the_rest():
    workers, own = split_cores(set(range(16)))
    assert workers == [12, 13, 14, 15] and own == list(range(12))
    assert split_cores({0, 1}) == ([0, 1], [0, 1]), "too few cores to keep apart: nobody is squeezed"
    workers, own = split_cores(set(range(6)))
    assert workers == [3, 4, 5] and own == [0, 1, 2]
