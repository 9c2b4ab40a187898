"""The interleaved A/B gate: its order, its statistics on planted data (one verdict per case from
all its pairs, Holm across cases), the orchestration on stand-in workers, the rounds of recorded
runs re-judged, and its process plumbing on the tiny model (no timing asserted: CPUs here are
shared and busy)."""

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from helpers import ROOT, run_flux_perf
from scipy.stats import binom

import flux_perf.ab.orchestrator as ab
import flux_perf.instrument.telemetry as telemetry
from flux_perf.ab.orchestrator import (
    AbCase,
    AbError,
    check_checkout,
    decide,
    foreign_processes,
    interleaved_order,
    pairs_for,
    run_ab,
    split_cores,
    telemetry_index,
)
from flux_perf.ab.output import cases_to_json, format_cases
from flux_perf.ab.pairs import (between_processes, blocks_added, disjoint_runs, measured_pairs, read_cases, read_files,
                                verdict_rates)
from flux_perf.ab.rule import FAMILY_ALPHA, Pooled, judge_block, pool, verdict_of
from flux_perf.gate.stats import paired_p_slower, paired_ratio

TOLERANCE = 0.01


def test_rounds_alternate_abba():
    assert interleaved_order(4) == [("base", "head"), ("head", "base"), ("base", "head"), ("head", "base")]
    # With a control, over a cycle of six triples: each side holds each place twice (linear drift
    # cancels against base) and follows each side, itself included, twice. ABC CBA alone never ran
    # the head right after itself, while base and control followed themselves.
    order = interleaved_order(12, ("base", "head", "control"))
    assert order[:2] == [("base", "head", "control"), ("control", "head", "base")] and order[6:] == order[:6]
    rounds = [side for triple in order[:6] for side in triple]
    assert Counter((rounds[i - 1], rounds[i]) for i in range(len(rounds))) == \
        Counter({(a, b): 2 for a in ("base", "head", "control") for b in ("base", "head", "control")})
    assert {side: sum(i for i, s in enumerate(rounds) if s == side) for side in ("base", "head", "control")} == \
        {"base": 51, "head": 51, "control": 51}


def _pooled(change: str, p_slower: float = 0.5) -> Pooled:
    return Pooled(20, 1.0, 0.99, 1.01, True, change, p_slower)


def test_same_needs_the_pooled_control_seen_slower():
    assert verdict_of(_pooled("same"), _pooled("slower"), False, 1) == ("same", None)
    verdict, why = verdict_of(_pooled("same"), _pooled("inconclusive"), False, 1)
    assert verdict == "inconclusive" and "control was not seen slower (inconclusive)" in why
    assert verdict_of(_pooled("same"), None, False, 1) == ("same", None), "no control, nothing to vouch for"
    assert verdict_of(_pooled("not slower"), _pooled("slower"), False, 1) == ("not slower", None)
    verdict, why = verdict_of(_pooled("not slower"), _pooled("same"), False, 1)
    assert verdict == "inconclusive" and "'not slower' unproven" in why, "a pass needs the control seen, as same"
    assert verdict_of(_pooled("slower"), _pooled("same"), True, 1) == ("slower", None), "a regression stands alone"
    assert verdict_of(_pooled("faster"), _pooled("inconclusive"), False, 1) == ("faster", None)


def _walls(slowdown: float, noise: float, drift: float, pairs: int, rng: random.Random, start: int = 0,
           control: float | None = None) -> dict[str, list[float]]:
    """Rounds of a machine whose speed drifts linearly, in the order the runner takes them."""
    sides = ("base", "head", "control") if control else ("base", "head")
    slow = {"base": 1.0, "head": slowdown, "control": control}
    walls = {side: [] for side in sides}
    for i, order in enumerate(interleaved_order(pairs, sides)):
        for j, side in enumerate(order):
            t = start + len(sides) * i + j
            walls[side].append(1.8 * (1 + drift * t) * (1 + rng.gauss(0, noise)) * slow[side])
    return walls


def _case(blocks: list[dict[str, list[float]]], stack: str = "fast") -> AbCase:
    case = AbCase(stack, "512x512@6", {}, {}, [judge_block(walls, 1.0, TOLERANCE) for walls in blocks])
    case.pool_blocks(TOLERANCE)
    return case


def test_one_verdict_from_every_blocks_pairs():
    rng = random.Random(3)
    blocks = [_walls(1.03, 0.012, 0.001, 8, rng, start=16 * b) for b in range(4)]
    case = _case(blocks)
    decide([case])
    base = [t for walls in blocks for t in walls["base"]]
    head = [t for walls in blocks for t in walls["head"]]
    everything = paired_ratio(base, head)
    assert (case.pooled.ratio, case.pooled.low, case.pooled.high) == (everything.ratio, everything.low, everything.high)
    assert case.pooled.pairs == 32 and case.pooled.p_slower == paired_p_slower(base, head, 1 + TOLERANCE)
    assert case.verdict == "slower" and case.holm_family == 1 and case.holm_rejected
    assert any(block.change != "slower" for block in case.blocks), "blocks alone disagree; they no longer decide"


def _slower_rate(slowdown: float, blocks: int, runs: int = 200) -> tuple[int, int]:
    """(pooled, every-block) `slower` counts over `runs` simulated one-case runs of 10-pair blocks,
    1.2 % spread a round and drift: deterministic seeds."""
    pooled = every_block = 0
    for seed in range(runs):
        rng = random.Random(1000 * blocks + seed)
        case = _case([_walls(slowdown, 0.012, 0.0005, 10, rng, start=20 * b) for b in range(blocks)])
        decide([case])
        pooled += case.verdict == "slower"
        every_block += all(block.change == "slower" for block in case.blocks)
    return pooled, every_block


def test_more_blocks_only_add_power_and_keep_the_false_slower_rate():
    planted = {blocks: _slower_rate(1.02, blocks) for blocks in (1, 2, 4, 8)}
    pooled = [planted[b][0] for b in (1, 2, 4, 8)]
    assert pooled == sorted(pooled) and pooled[-1] >= 195, f"pooled: more blocks, more power {planted}"
    every_block = [planted[b][1] for b in (1, 2, 4, 8)]
    assert every_block == sorted(every_block, reverse=True) and every_block[-1] < pooled[0], \
        f"the old rule (every block slower) loses the regression as blocks are added {planted}"
    # No change, and a change right at the tolerance (the worst case): slower at most at the
    # one-sided level, whatever the number of blocks (binomial 99.9 % bound on 200 runs).
    bound = binom.ppf(0.999, 200, FAMILY_ALPHA)
    for blocks in (1, 2, 4, 8):
        assert _slower_rate(1.0, blocks)[0] <= FAMILY_ALPHA * 200
        assert _slower_rate(1 + TOLERANCE, blocks)[0] <= bound


def test_holm_decides_slower_across_the_cases_of_a_run():
    # Cases whose pooled results are set by hand, for p-values on either side of Holm's steps.
    strong, alone, unchanged = (_case([{"base": [1.0, 1.0], "head": [1.0, 1.0]}], s) for s in ("a", "b", "c"))
    strong.pooled = _pooled("slower", 0.001)
    alone.pooled = _pooled("slower", 0.02)  # above alpha/2 = 0.0125 where Holm compares it
    unchanged.pooled = _pooled("same", 0.9)
    broken = AbCase("d", "512x512@6", {}, {}, error="head: CUDA out of memory")
    busy = _case([{"base": [1.0, 1.0], "head": [1.0, 1.0]}], "e")
    busy.foreign_processes = [{"pid": 7, "name": "stress"}]
    busy.pooled = _pooled("slower", 0.0001)
    cases = [strong, alone, unchanged, broken, busy]
    decide(cases)
    assert [c.verdict for c in cases] == ["slower", "inconclusive", "same", "error", "disturbed"]
    assert alone.judged[1] == "slower at 95 % alone, not after Holm's correction over 3 cases"
    assert strong.holm_family == 3 and broken.holm_family == busy.holm_family == 0
    assert "not in Holm's family" in broken.judged[1] and "not in Holm's family" in busy.judged[1]
    text = format_cases(cases, TOLERANCE)
    assert "slower needs Holm's correction over 3 cases" in text and "not in the family: d-512x512@6 (error), " \
        "e-512x512@6 (disturbed)" in text
    decide([alone])
    assert alone.verdict == "slower", "alone, the same interval is a regression"


def test_the_sampler_watches_the_workers_card(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert telemetry_index("cuda:1") == 1 and telemetry_index("cuda") == 0 and telemetry_index("cpu") is None
    with pytest.raises(AbError, match="cuda:x"):
        telemetry_index("cuda:x")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # NVML counts physical cards
    assert telemetry_index("cuda:1") == 3 and telemetry_index("cuda") == 2


class _StandInWorker:
    """A side without a process: rounds of 1 s, the head slowed by `HEAD_SLOWDOWN[stack]`."""

    HEAD_SLOWDOWN = {"regressed": 1.03, "unchanged": 1.0}

    def __init__(self, side, checkout, log, cores=None):
        self.side, self.slowdown, self.rng = side, 1.0, random.Random(side)
        self.pid = {"base": 101, "head": 102, "control": 103}[side]

    def ask(self, cmd, **request):
        if cmd == "prepare":
            self.slowdown = self.HEAD_SLOWDOWN[request["stack"]] if self.side == "head" else 1.0
            return {"ok": True, "pid": self.pid, "warmup_s": [1.0], "fingerprint": "tiny"}
        return {"ok": True, "wall_s": self.slowdown * (1 + self.rng.gauss(0, 0.002))}

    def close(self):
        pass


class _StandInSampler:
    indices = []

    def __init__(self, index, interval_s):
        self.indices.append(index)

    def start(self):
        pass

    def stop(self):
        return telemetry.TelemetryReport(available=True)


def test_the_run_decides_after_its_last_case_and_keeps_a_provisional_file(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(ab, "Worker", _StandInWorker)
    monkeypatch.setattr(telemetry, "TelemetrySampler", _StandInSampler)
    _StandInSampler.indices = []
    written = []
    cases = run_ab(ROOT, ROOT, [("regressed", "512x512@6"), ("unchanged", "512x512@6")], pairs=10, blocks=2, device="cuda:1",
                   pin=False, log=lambda line: None,
                   on_block=lambda cases: written.append(cases_to_json(cases, {}, final=False)))
    assert _StandInSampler.indices == [1, 1], "the card of --device, not GPU 0"
    assert [len(data["cases"]) for data in written] == [1, 1, 2, 2] and not any(d["final"] for d in written)
    assert written[1]["holm_family"] == 1, "provisional: decided over the cases so far"
    assert [c.verdict for c in cases] == ["slower", "same"] and all(c.holm_family == 2 for c in cases)
    assert all(c.pooled.pairs == 20 and len(c.blocks) == 2 for c in cases)


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0, float("inf"), None, "0.3"])
def test_a_side_reporting_a_round_that_is_not_a_time_errors_its_case_alone(monkeypatch, bad):
    """A NaN round ended the whole A/B in a ValueError traceback, exit 1 (`slower`'s code)."""
    class BrokenHead(_StandInWorker):
        def ask(self, cmd, **request):
            reply = super().ask(cmd, **request)
            if cmd == "round" and self.side == "head" and self.slowdown == self.HEAD_SLOWDOWN["regressed"]:
                reply["wall_s"] = bad
            return reply

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(ab, "Worker", BrokenHead)
    monkeypatch.setattr(telemetry, "TelemetrySampler", _StandInSampler)
    cases = run_ab(ROOT, ROOT, [("regressed", "512x512@6"), ("unchanged", "512x512@6")], pairs=10, blocks=1,
                   device="cuda", pin=False, log=lambda line: None)
    assert f"the head side reported a round of {bad!r} s: not a time" in (cases[0].error or "")
    assert cases[1].error is None and cases[1].verdict == "same", "the other case is still measured and judged"


def test_a_run_cut_short_keeps_what_nvml_saw_over_its_blocks(monkeypatch):
    """An A/B cut by its time limit (SIGTERM, as every H100 call of the nineteenth session) wrote
    its blocks with no `card` and no foreign process: a shared GPU read as a clean run."""
    class BusyCardSampler(_StandInSampler):
        def stop(self):
            return telemetry.TelemetryReport(available=True, other_processes=[{"pid": 555, "name": "stress"}])

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(ab, "Worker", _StandInWorker)
    monkeypatch.setattr(telemetry, "TelemetrySampler", BusyCardSampler)
    seen = []

    def cut_after_the_first_block(cases):
        seen[:] = cases
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ab(ROOT, ROOT, [("unchanged", "512x512@6")], pairs=10, blocks=3, device="cuda", pin=False,
               log=lambda line: None, on_block=cut_after_the_first_block)
    (case,) = seen
    assert len(case.blocks) == 1 and case.foreign_processes == [{"pid": 555, "name": "stress"}]
    assert case.card == {"flags": [], "sm_clock_mhz": None, "temperature_c_max": None}
    written = cases_to_json(seen, {}, final=False)["cases"][0]
    assert written["foreign_processes"] and written["card"] is not None


def test_each_block_keeps_the_hosts_cpu_contention_and_says_it_when_over_the_threshold(monkeypatch, tmp_path):
    """The A/B read NVML alone: a block run while the host's CPU was contended looked like any
    other. Each block now keeps PSI's stall and the steal share, and the log says a busy host
    beside the block's ratio (both sides of each pair share it: a wider interval, not a bias)."""
    from flux_perf.instrument import host

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(ab, "Worker", _StandInWorker)
    monkeypatch.setattr(telemetry, "TelemetrySampler", _StandInSampler)
    shares = iter([(0.30, 0.0), (0.01, 0.0)])

    class ScriptedHost:
        def __init__(self):
            self.stall, self.steal = next(shares)

        def stall_fraction(self):
            return self.stall

        def steal_fraction(self):
            return self.steal

    monkeypatch.setattr(host, "HostPressure", ScriptedHost)
    lines = []
    cases = run_ab(ROOT, ROOT, [("unchanged", "512x512@6")], pairs=10, blocks=2, device="cuda", pin=False,
                   log=lines.append)
    blocks = [line for line in lines if " block " in line]
    assert "host busy: host CPU contention: runnable tasks waited for a CPU 30% of the timed rounds" in blocks[0]
    assert "host busy" not in blocks[1]
    assert [b.host_cpu_stall for b in cases[0].blocks] == [0.30, 0.01]
    written = cases_to_json(cases, {}, final=True)["cases"][0]["blocks"]
    assert [b["host_cpu_stall"] for b in written] == [0.30, 0.01], "kept in the --json file"


def test_too_few_pairs_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        pool([1.0], [1.0], TOLERANCE)


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
                                                   ("--block-seconds", "-5", "block_seconds=-5.0"),
                                                   ("--control", "2", "control=2.0"),
                                                   # at the tolerance no case could ever be `same`
                                                   ("--control", "0.01", "control=0.01 is not above the tolerance"),
                                                   ("--tolerance", "nan", "tolerance nan"),
                                                   # the gate's rule for --flux-inject-slowdown (was exit 3)
                                                   ("--base-inject-slowdown", "-1", "--base-inject-slowdown -1.0"),
                                                   ("--head-inject-slowdown", "nan", "--head-inject-slowdown nan")])
def test_bad_ab_plans_are_refused_naming_the_value(option, value, named):
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--stacks", "bf16", "--scenarios",
                           "64x64@2", "--device", "cpu", option, value)
    assert result.returncode == 2 and named in result.stderr, result.stderr[-2000:]
    assert "preparing" not in result.stdout + result.stderr, "refused before any worker started"


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


def test_workers_with_a_control_run_each_side_in_its_own_process_and_keep_every_round(tmp_path):
    # One run of real workers proves the plumbing: three processes, the control on the head's code,
    # pairs sized from the warm-up, every round kept and judged. (Blocks pooled and decided after
    # the last case: test_the_run_decides_after_its_last_case..., on stand-in workers.)
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--stacks", "bf16", "--scenarios",
                           "64x64@2", "--block-seconds", "0.001", "--blocks", "1", "--device", "cpu",
                           "--control", "0.5", "--json", str(tmp_path / "ab.json"))
    assert result.returncode in (0, 1, 6), result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads((tmp_path / "ab.json").read_text())
    (case,) = data["cases"]
    assert data["flux_perf_ab"] == 2 and data["final"] and data["settings"]["control"] == 0.5
    assert case["error"] is None and len({case["base"]["pid"], case["head"]["pid"], case["control"]["pid"]}) == 3
    assert case["base"]["code"] == case["head"]["code"] == case["control"]["code"] == str(ROOT / "flux_perf")
    # No --pairs: sized from the warm-up's round time, here the floor of 10 pairs.
    assert case["pairs"] == 10 and data["settings"]["pairs"] == "auto"
    (block,) = case["blocks"]
    assert len(block["base_s"]) == len(block["head_s"]) == len(block["control"]["control_s"]) == 10
    assert case["pooled"]["pairs"] == case["control_pooled"]["pairs"] == 10 and case["holm_family"] == 1
    assert case["verdict"] in ("slower", "faster", "same", "not slower", "inconclusive")
    assert case["prepare_s"] > 0 and block["seconds"] > 0
    for shown in ("[base] first call", "block 1/1", "10 pairs a block (~0 s of rounds", "30 rounds",
                  "Holm's correction over 1 case "):
        assert shown in result.stdout, shown
    assert set(measured_pairs(tmp_path / "ab.json")) == {"bf16-64x64@2", "bf16-64x64@2 control"}
    # The control is sized to half of the whole warm round, not of its transformer steps alone.
    assert case["base"]["plant"] is None and case["control"]["plant"]["sized_to"] == "round"
    assert case["control"]["plant"]["fraction"] == 0.5 and case["control"]["plant"]["round_ms"] > 0
    # The blocks pictured beside the --json file.
    assert f"A/B blocks, pictured: {tmp_path / 'ab.png'}" in result.stdout
    assert (tmp_path / "ab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_committed_ab_file_is_pictured_and_one_without_blocks_is_not(tmp_path):
    from flux_perf.report.plots import plot_ab

    data = json.loads((ROOT / "docs/results/ab-512-control-session12-b.json").read_text())
    assert plot_ab(data, tmp_path / "ab.png") == tmp_path / "ab.png"
    assert (tmp_path / "ab.png").stat().st_size > 10_000
    assert plot_ab({"cases": [{"stack": "fast", "scenario": "512x512@6", "blocks": []}]}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    from flux_perf.commands.ab import picture_path

    assert picture_path(tmp_path / "ab.json") == tmp_path / "ab.png"
    assert picture_path(tmp_path / "ab.png") == tmp_path / "ab.png.png", "never the --json file itself"


def test_a_plant_sized_to_the_round_takes_that_share_of_the_whole_round():
    """At 512 the steps are about four fifths of a round: a plant sized to the steps read 1.6 % for
    2 %. Sized to the round, its extra work per step is the fraction of the unslowed round / steps."""
    from flux_perf.components.slowdown import Slowdown

    plant = Slowdown("0.02")
    with pytest.raises(RuntimeError, match="needs a warm call first"):
        plant.size_to_round(100.0, 6)
    # As the plant leaves itself after its warm call: 2 % of a 13.3 ms step, 1 ms a probe of 16384 rows.
    plant.rows = {("shape", "cpu"): 4352}
    plant.calibration = {"probe_ms": 1.0, "extra_ms_per_step": 4352 / 16384, "sized_to": "step"}
    round_ms = 100.0 + 6 * 4352 / 16384  # an unslowed round of 100 ms, with the per-step plant in it
    plant.size_to_round(round_ms, steps=6)
    extra_per_step = 0.02 * 100.0 / 6  # 2 % of the round, over its 6 steps: 0.333 ms
    assert plant.rows == {("shape", "cpu"): int(extra_per_step * 16384) // 16 * 16}
    assert plant.report()["sized_to"] == "round" and plant.report()["round_ms"] == pytest.approx(100.0)
    assert 6 * plant.report()["extra_ms_per_step"] == pytest.approx(2.0, rel=0.01)
    # A probe timed in a burst of host load (a busy CPU): 80 ms of extra work a step claimed
    # inside a 100 ms round. The plant added at most 2 % of the unslowed round, so that is the floor.
    plant.calibration.update(extra_ms_per_step=80.0)
    plant.size_to_round(100.0, steps=6)
    assert plant.report()["round_ms"] == pytest.approx(100.0 / 1.02)


def test_a_slowed_card_is_named_beside_the_verdict():
    hot = _case([{"base": [1.0, 1.0], "head": [1.02, 1.02]}])
    hot.card = {"flags": ["thermal-throttle", "power-throttle"], "sm_clock_mhz": 1200, "temperature_c_max": 90}
    text = format_cases([hot], TOLERANCE)
    assert "card slowed (thermal-throttle; SM clock 1200 MHz, up to 90 C)" in text
    cool = _case([{"base": [1.0, 1.0], "head": [1.02, 1.02]}])
    cool.card = {"flags": ["power-throttle"]}
    assert "card slowed" not in format_cases([cool], TOLERANCE)
    assert hot.verdict == "inconclusive", "2 pairs reach no 95 % interval"


def test_version_2_keeps_the_verdicts_and_both_versions_read_back(tmp_path):
    rng = random.Random(5)
    case = _case([_walls(1.03, 0.003, 0.0, 10, rng, control=1.03) for _ in range(2)])
    decide([case])
    data = cases_to_json([case], {"control": 0.03, "inject": {}})
    stored = data["cases"][0]
    assert data["flux_perf_ab"] == 2 and data["final"] and data["holm_family"] == 1
    assert set(stored["pooled"]) == {"pairs", "ratio", "low", "high", "reached", "change", "p_slower"}
    assert stored["verdict"] == "slower" and stored["reason"] is None and stored["holm_rejected"]
    assert stored["control_pooled"]["change"] == "slower" and len(stored["blocks"]) == 2
    (tmp_path / "v2.json").write_text(json.dumps({**data, "cases": [{**stored, "base": {}, "head": {}}]}))
    pairs = measured_pairs(tmp_path / "v2.json")
    assert pairs["fast-512x512@6"] == list(zip(case.rounds("base"), case.rounds("head")))
    assert pairs["fast-512x512@6 control"] == list(zip(case.rounds("base"), case.rounds("control")))
    # Version 1, as the H100 runs of earlier sessions wrote it.
    (recorded,) = read_cases(ROOT / "docs" / "results" / "ab-1024-control-10pairs-c.json")
    assert len(recorded.head_s) == len(recorded.control_s) == 10 and recorded.planted_control == 0.02
    assert recorded.same_code and recorded.block_pairs == [10]
    (tmp_path / "v3.json").write_text(json.dumps({**data, "flux_perf_ab": 3}))
    with pytest.raises(AbError, match="flux_perf_ab = 3: this flux-perf reads versions 1 and 2"):
        read_cases(tmp_path / "v3.json")


def _ab_file(path, blocks, control=None, seconds=6.0, head_commit="c"):
    """An `ab --json` file (version 1) of one case: `blocks` of (base, head[, control]) rounds;
    the head's commit the base's ("c"): the same code."""
    stored = [{"base_s": [p[0] for p in block], "head_s": [p[1] for p in block], "seconds": seconds,
               **({"control": {"control_s": [p[2] for p in block]}} if control else {})} for block in blocks]
    case = {"stack": "fast", "scenario": "1024x1024@8", "blocks": stored, "base": {"commit": "c", "code": "/ab"},
            "head": {"commit": head_commit, "code": "/ab"}}
    path.write_text(json.dumps({"settings": {"control": control, "inject": {}}, "cases": [case]}))
    return path


def test_disjoint_runs_count_each_verdict_once_per_run(tmp_path):
    # Three blocks of 10 pairs: A vs A within 0.2 %, and a control 3 % slower.
    rng = random.Random(2)
    blocks = [[(1.0, 1 + rng.uniform(-0.002, 0.002), 1.03 + rng.uniform(-0.002, 0.002)) for _ in range(10)]
              for _ in range(3)]
    path = _ab_file(tmp_path / "ab.json", blocks, control=0.03)
    same, control = disjoint_runs(read_files([path]), [10, 20], TOLERANCE, family=4)
    assert (same["kind"], control["kind"]) == ("A vs A", "planted 3.0%") and same["pairs"] == 30
    assert same["sizes"]["10"]["runs"] == same["sizes"]["10"]["same"] == 3
    assert control["sizes"]["10"]["slower"] == 3 and control["sizes"]["20"]["runs"] == 1, "no pair used twice"
    assert same["sizes"]["10"]["minutes"] == pytest.approx(10 * 0.6 / 60), "6 s a 10-pair block"


def test_a_difference_between_processes_shows_across_files_not_within_one(tmp_path):
    # Two A-vs-A runs, each one pair of processes: in the second the head's process runs 1.5 %
    # faster in every pair (as fp8-512x512@4 did on the H100), so its tight interval leaves out 1.
    rng = random.Random(3)
    steady = [[(1.0, 1 + rng.uniform(-0.002, 0.002)) for _ in range(20)]]
    offset = [[(1.0, 0.985 + rng.uniform(-0.002, 0.002)) for _ in range(20)]]
    changed = [[(1.0, 1.03) for _ in range(20)]]  # a real change (other commit): not an A vs A
    files = read_files([_ab_file(tmp_path / "steady.json", steady), _ab_file(tmp_path / "offset.json", offset),
                        _ab_file(tmp_path / "changed.json", changed, head_commit="d")])
    (entry,) = between_processes(files)
    assert [Path(row["file"]).name for row in entry["files"]] == ["steady.json", "offset.json"]
    assert [row["leaves_out_1"] for row in entry["files"]] == [False, True] and entry["leaving_out_1"] == 1
    assert entry["ratio_range"][0] == pytest.approx(0.985, abs=0.002)
    result = run_flux_perf("ab-pairs", str(tmp_path / "steady.json"), str(tmp_path / "offset.json"), "--runs", "10,40",
                           "--json", str(tmp_path / "between.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "between.json").read_text())["between_processes"][0]["leaving_out_1"] == 1
    assert (tmp_path / "between.png").stat().st_size > 0 and "A vs A across files, pictured" in result.stdout
    assert "fast-1024x1024@8 (2 files): head/base 0.98" in result.stdout and "1 of 2 intervals leave out 1" in result.stdout
    assert "offset.json  <- leaves out 1" in result.stdout
    assert "40 pairs: no run: no file holds that many pairs of this case" in result.stdout, "a size too large is said"


def test_blocks_added_lose_a_regression_under_the_old_rule_only(tmp_path):
    # 3 % slower in every block, but each block has three pairs that read 1 % faster: alone a
    # block's interval reaches below the tolerance; together the pairs are clearly slower.
    block = [(1.0, 1.03 + 0.001 * i) for i in range(7)] + [(1.0, 0.99)] * 3
    path = _ab_file(tmp_path / "ab.json", [block] * 4, head_commit="d")
    (entry,) = blocks_added(read_files([path]), TOLERANCE, family=4)
    assert entry["kind"] == "head vs base" and entry["pairs_per_block"] == 10
    assert entry["blocks"]["1"]["old"]["slower"] == 0 and entry["blocks"]["1"]["old"]["runs"] == 4
    assert entry["blocks"]["4"]["pooled"]["slower"] == 1 and entry["blocks"]["4"]["old"]["slower"] == 0


def test_verdict_rates_show_how_many_pairs_a_change_needs():
    rng = random.Random(1)
    # 2 % slower with 0.8 % spread per pair: few pairs are often inconclusive, many are slower.
    planted = [(1.0, 1.02 * math.exp(rng.gauss(0, 0.008))) for _ in range(60)]
    rates = verdict_rates(planted, [3, 20], TOLERANCE)
    assert rates[20]["slower"] > 0.9 and rates[3]["slower"] < rates[20]["slower"]
    null = [(1.0, math.exp(rng.gauss(0, 0.008))) for _ in range(60)]
    assert verdict_rates(null, [20], TOLERANCE)[20]["slower"] < 0.05


def test_ab_pairs_reads_ab_files_and_refuses_others(tmp_path):
    pairs = [(1.0, 1.03, 1.03), (1.0, 1.031, 1.031), (1.0, 1.029, 1.029), (1.0, 1.032, 1.032)] * 3
    path = _ab_file(tmp_path / "ab.json", [pairs], control=0.02, head_commit="d")
    result = run_flux_perf("ab-pairs", str(path), "--sizes", "8")
    assert result.returncode == 0, result.stderr
    assert "fast-1024x1024@8 (12 pairs): 8: slower 100%" in result.stdout
    result = run_flux_perf("ab-pairs", str(path), "--runs", "6,12", "--family", "4", "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "fast-1024x1024@8 head/base, head vs base (12 pairs, 1 file):" in result.stdout
    assert "fast-1024x1024@8 control/base, planted 2.0% (12 pairs, 1 file):" in result.stdout
    runs = json.loads((tmp_path / "r.json").read_text())
    assert runs["command"].startswith("flux-perf ab-pairs") and runs["rule"]["family"] == 4
    assert [entry["sizes"]["6"]["runs"] for entry in runs["runs"]] == [2, 2]
    (tmp_path / "other.json").write_text("{}")
    result = run_flux_perf("ab-pairs", str(tmp_path / "other.json"))
    assert result.returncode == 2 and "not an `flux-perf ab --json` file" in result.stderr


def test_workers_share_their_cores_and_the_orchestrator_keeps_the_rest():
    workers, own = split_cores(set(range(16)))
    assert workers == [12, 13, 14, 15] and own == list(range(12))
    assert split_cores({0, 1}) == ([0, 1], [0, 1]), "too few cores to keep apart: nobody is squeezed"
    workers, own = split_cores(set(range(6)))
    assert workers == [3, 4, 5] and own == [0, 1, 2]


def _edited_ab_file(tmp_path, edit):
    """A good `ab --json` file (12 pairs, 3 % slower), then `edit(data)` applied to its JSON."""
    path = _ab_file(tmp_path / "ab.json", [[(1.0, 1.03 + 0.001 * (i % 4)) for i in range(12)]], head_commit="d")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _set_round(value):
    return lambda data: data["cases"][0]["blocks"][0]["base_s"].__setitem__(3, value)


def _control_in_the_second_block_only(data):
    """Its control rounds would be paired with the first block's base rounds."""
    blocks = data["cases"][0]["blocks"]
    blocks.append({**blocks[0], "control": {"control_s": list(blocks[0]["base_s"])}})


@pytest.mark.parametrize("edit, named", [
    (_set_round("1.0"), 'cases[0].blocks[0].base_s[3] = "1.0": expected a round\'s seconds: a finite number above 0'),
    (_set_round(-1.0), "cases[0].blocks[0].base_s[3] = -1.0: expected a round's seconds"),
    (_set_round(float("nan")), "cases[0].blocks[0].base_s[3] = NaN: expected a round's seconds"),
    (_set_round(True), "cases[0].blocks[0].base_s[3] = true: expected a round's seconds"),
    (lambda data: data["cases"][0]["blocks"][0]["head_s"].pop(), "cases[0].blocks[0].head_s = [1.03, "),
    (lambda data: data.update(flux_perf_ab=99), "flux_perf_ab = 99: this flux-perf reads versions 1 and 2"),
    (lambda data: data.update(flux_perf_ab="2"), 'flux_perf_ab = "2": this flux-perf reads versions 1 and 2'),
    (lambda data: data["cases"][0].update(stack=None), "cases[0].stack = null: expected a string"),
    (lambda data: data["settings"].update(inject={"head": "3%"}), 'settings.inject.head = "3%": expected a finite'),
    (_control_in_the_second_block_only, "cases[0].blocks[0].control = null: expected a control, as in blocks [1]"),
])
def test_ab_pairs_refuses_a_bad_file_naming_file_key_and_value(tmp_path, cli, edit, named):
    path = _edited_ab_file(tmp_path, edit)
    for mode in ((), ("--runs", "6")):
        result = cli("ab-pairs", path, *mode)
        assert result.returncode == 2 and f"{path}: {named}" in result.stderr, result.stderr
        assert result.stdout == "", "nothing judged from a file that was not read whole"


@pytest.mark.parametrize("options, named", [
    (("--draws", "0"), "--draws 0: draw at least 1 block per size"),
    (("--draws", "-5"), "--draws -5: draw at least 1 block per size"),
    (("--sizes", "8,a"), "--sizes 8,a: 'a' is not a whole number of pairs"),
    (("--sizes", "1"), "--sizes 1: a block needs at least 2 pairs"),
    (("--runs", "6,x"), "--runs 6,x: 'x' is not a whole number of pairs"),
    (("--runs", "6", "--family", "0"), "--family 0: Holm's family holds at least 1 case"),
])
def test_ab_pairs_refuses_bad_options_naming_the_value(tmp_path, cli, options, named):
    result = cli("ab-pairs", _edited_ab_file(tmp_path, lambda data: None), *options)
    assert result.returncode == 2 and named in result.stderr and result.stdout == "", result.stderr


def test_the_ab_table_shows_the_statistic_the_verdict_judges():
    # Rounds that drift (base 1 s, then 2 s) with head 6.5 % faster in every pair but one: the head's
    # own median (1.86 s) sits above the base's (1.0 s), the paired ratio says faster. The table
    # shows the head as the verdict sees it, base x the ratio, never the contradicting median.
    base = [1.0] * 16 + [2.0] * 15
    head = [0.93 + 0.001 * i for i in range(15)] + [1.9] + [1.86 + 0.001 * i for i in range(15)]
    case = _case([{"base": base, "head": head}])
    decide([case])
    row = format_cases([case], TOLERANCE).splitlines()[1].split()
    assert row[0] == "fast-512x512@6" and row[-1] == case.verdict == "faster"
    base_s, other_s, ratio = map(float, row[2:5])
    assert base_s == 1.0 and other_s == pytest.approx(base_s * ratio, abs=1e-4) and other_s < base_s
    assert "other s* = base s x ratio, the ratio the verdict judges" in format_cases([case], TOLERANCE)


def test_the_picture_draws_the_runs_own_tolerance_zero_included(tmp_path, monkeypatch):
    """`ab --tolerance 0` is allowed (check_tolerance: [0, 1)); the picture drew its band at
    1 +- 1 % (`tolerance or 0.01`), a band the verdicts were never judged by."""
    import matplotlib.figure

    from flux_perf.report.plots import plot_ab

    drawn = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, *a, **k: (drawn.append(figure),
                                                                                      real(figure, *a, **k)))
    data = json.loads((ROOT / "docs/results/ab-512-control-session12-b.json").read_text())
    for tolerance, edges in ((0.0, {1.0}), (0.02, {0.98, 1.02})):
        data["settings"]["tolerance"] = tolerance
        drawn.clear()
        assert plot_ab(data, tmp_path / "ab.png")
        axis = drawn[0].axes[0]
        dashed = {round(line.get_ydata()[0], 6) for line in axis.lines if line.get_linestyle() == "--"}
        assert dashed == edges, (tolerance, dashed)
        assert f"1 +- {tolerance:.0%}" in axis.get_title()


def test_a_side_frees_the_last_case_before_it_builds_the_next(monkeypatch):
    """The H100 ran out of memory at an A/B's second stack (fp8 after compile, eighteenth session):
    each worker still held the last model, through its case and a heap frozen out of the
    collector's reach, while it built the next."""
    import gc
    import weakref

    import flux_perf.instrument.runner as runner_module
    from flux_perf.ab.worker import Side

    side = Side()
    request = {"cmd": "prepare", "side": "base", "model": "tiny", "device": "cpu", "scenario": "64x64@2"}
    try:
        assert side.prepare({**request, "stack": "bf16"})["ok"]
        last = weakref.ref(side.case.prepared.model.pipe.transformer)
        load_model, alive_at_build = runner_module.load_model, []

        def load_next(*args, **kwargs):
            gc.collect()  # what the runner's release does on a GPU
            alive_at_build.append(last() is not None)
            return load_model(*args, **kwargs)

        monkeypatch.setattr(runner_module, "load_model", load_next)
        assert side.prepare({**request, "stack": "fused-qkv"})["ok"]
        assert alive_at_build == [False], "the last model was still alive when the next was built"
        assert side.round()["ok"]
        side.runner.case = lambda *_: (_ for _ in ()).throw(RuntimeError("build failed"))
        with pytest.raises(RuntimeError):
            side.prepare({**request, "stack": "bf16"})
        assert side.round() == {"ok": False, "error": "no case to time: the last prepare failed or none was "
                                                      "asked for"}, "never the case before a failed prepare"
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("body, said", [
    # Closes its output, then exits: the reply's end comes before the process is reaped.
    ("import os, sys, time\nsys.stderr.write('boom\\n'); sys.stderr.flush()\nos.close(1)\ntime.sleep(1)\nos._exit(7)\n",
     "base worker exited (code 7):\nboom"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "base worker was killed by signal SIGKILL"),
])
def test_a_worker_that_dies_is_named_with_its_exit_code_or_signal(tmp_path, body, said):
    """The message read `worker exited (code None)`: built before the process was reaped."""
    from flux_perf.ab.worker import AbError, Worker

    script = tmp_path / "flux_perf" / "ab" / "worker.py"
    script.parent.mkdir(parents=True)
    script.write_text(body)
    worker = Worker("base", tmp_path, log=lambda _: None)
    with pytest.raises(AbError) as error:
        worker.ask(cmd="prepare")
    assert str(error.value).startswith(said), str(error.value)
