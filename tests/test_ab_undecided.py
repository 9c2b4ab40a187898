"""`flux-perf ab --undecided-from RESULTS`: the cases a suite run could not judge go to the A/B
that can decide them (latency INCONCLUSIVE), and what no A/B can decide keeps the exit status off
0. An A/B that stays undecided itself is exit 6, never a pass."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
from helpers import ROOT, copy_budgets, make_results, run_flux_perf, run_gpu_suite_here

from flux_perf.ab import orchestrator
from flux_perf.ab.orchestrator import AbCase
from flux_perf.ab.pairs import measured_pairs
from flux_perf.ab.rule import Block, Pooled
from flux_perf.commands.ab import ab_cases, ab_exit, run
from flux_perf.report.judged import EXIT_NOT_JUDGED, NotJudged, Unjudged, not_judged_in
from flux_perf.report.records import read_results, write_results
from flux_perf.report.verdicts import BudgetRecord, FidelityRecord, LatencyRecord
from flux_perf.suite.config import ConfigError

INCONCLUSIVE = LatencyRecord("inconclusive", BudgetRecord(0.417, "relative", "recorded 0.379 s + 10%"),
                             detection_limit=0.32)
PASSED = LatencyRecord("pass")
FLOOR_ONLY = FidelityRecord("pass", gap="no calibration for 512x512@6 on this GPU")


def _suite_run(tmp_path, latency: LatencyRecord, fidelity: FidelityRecord | None = None, skipped=(),
               case="fp8-512x512@6"):
    """A results.json of four cases: `case` with `latency`/`fidelity`, three judged ones."""
    cases = ["bf16-512x512@6", "fp8-512x512@6", "fast-512x512@6", "fast-1024x1024@8"]
    path = make_results(tmp_path / "results.json", {case: [0.4] * 8 for case in cases})
    results = read_results(path)
    for record in results.records:
        record.latency = latency if record.id == case else PASSED
        record.fidelity = (fidelity or FidelityRecord("pass")) if record.id == case else FidelityRecord("pass")
        record.stopped = "undecided at the cap of 32 rounds"
    results.skipped = list(skipped)
    write_results(results, path)
    return path


def _args(path, stacks=None, scenarios=None):
    return SimpleNamespace(stacks=stacks, scenarios=scenarios, undecided_from=str(path), model=None)


def test_only_the_undecided_latency_cases_are_ab_tested_unless_more_are_asked_for(tmp_path):
    path = _suite_run(tmp_path, INCONCLUSIVE)
    cases, undecidable, model, _ = ab_cases(_args(path))
    assert cases == [("fp8", "512x512@6")] and undecidable == [] and model == "synthetic"
    cases, _, _, _ = ab_cases(_args(path, stacks="bf16,fp8", scenarios="512x512@6"))
    assert cases == [("bf16", "512x512@6"), ("fp8", "512x512@6")], "asked-for cases first, none twice"
    cases, _, _, _ = ab_cases(_args(path, stacks="fast"))
    assert cases == [("fast", "512x512@6"), ("fast", "1024x1024@8"), ("fp8", "512x512@6")]


def test_a_case_disturbed_against_its_reference_goes_to_the_ab_too(tmp_path):
    """Its rounds ran on a machine unlike the reference's (the eleventh session's fp8-512x512@6: the
    machine slowed under the case); both sides of an A/B run on one machine, so it can judge it."""
    disturbed = LatencyRecord("disturbed", disturbance=(
        "the timed rounds (median 0.535 s) ran 46% slower than this case's last warm-up calls",))
    cases, undecidable, _, _ = ab_cases(_args(_suite_run(tmp_path, disturbed)))
    assert cases == [("fp8", "512x512@6")] and undecidable == []


def test_what_an_ab_cannot_decide_is_named_and_never_exit_0(tmp_path, capsys):
    skipped = [{"stack": "attn-fa3", "scenario": "512x512@6", "reason": "flash-attn 3 is not installed"}]
    path = _suite_run(tmp_path, PASSED, fidelity=FLOOR_ONLY, skipped=skipped)
    cases, undecidable, _, _ = ab_cases(_args(path))
    assert cases == []
    assert [item.why for item in undecidable] == [Unjudged.FIDELITY_GAP, Unjudged.NOT_RUN]
    assert ab_exit([], undecidable) == EXIT_NOT_JUDGED
    shown = capsys.readouterr().out
    assert "fp8-512x512@6: fidelity judged by the floor alone (no calibration for 512x512@6" in shown
    assert "attn-fa3-512x512@6: not run (flash-attn 3 is not installed)" in shown


def _decided(verdict: str, family: int = 1) -> AbCase:
    case = AbCase("fp8", "512x512@6", {}, {}, blocks=[Block([1.0], [1.0], 1.0, 0.99, 1.01, verdict)])
    change = "slower" if verdict == "slower" else verdict
    case.pooled = Pooled(60, 1.0, 0.99, 1.01, True, change, 0.001 if verdict == "slower" else 0.5)
    case.holm_family, case.holm_rejected = family, verdict == "slower"
    return case


GAP = NotJudged("fast-768x768@6", "fast", "768x768@6", Unjudged.FIDELITY_GAP, "no calibration", False)


@pytest.mark.parametrize("verdicts, undecidable, code", [
    (["same"], [], 0), (["faster"], [], 0), (["not slower"], [], 0), (["same", "inconclusive"], [], EXIT_NOT_JUDGED),
    (["inconclusive", "slower"], [], 1), (["same"], [GAP], EXIT_NOT_JUDGED), (["slower"], [GAP], 1),
    (["error", "slower", "inconclusive"], [GAP], 3)])
def test_an_undecided_ab_is_exit_6_and_slower_wins(verdicts, undecidable, code, capsys):
    cases = [_decided(v, len(verdicts)) for v in verdicts]
    if "error" in verdicts:
        cases[verdicts.index("error")].error = "base: the worker died"
    assert ab_exit(cases, undecidable) == code
    shown = capsys.readouterr().out
    assert ("not decided: fp8-512x512@6" in shown) == (code == EXIT_NOT_JUDGED and "inconclusive" in verdicts)
    assert ("fast-768x768@6: fidelity judged by the floor alone" in shown) == bool(undecidable)


def test_a_results_file_with_nothing_undecided_starts_no_worker_and_passes(tmp_path):
    path = _suite_run(tmp_path, PASSED)
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--undecided-from", str(path),
                           "--device", "cpu")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "0 case(s) whose latency the suite left undecided or disturbed" in result.stderr + result.stdout
    assert "nothing to A/B" in result.stdout and "preparing" not in result.stderr


def test_a_results_file_a_command_wrote_is_refused_not_read_as_nothing_undecided(tmp_path):
    # `flux-perf run` shared the gate's folder: its file read as "nothing to A/B", exit 0.
    path = _suite_run(tmp_path, INCONCLUSIVE)
    results = read_results(path)
    results.command = "flux-perf run --resolution 512 --steps 6"
    write_results(results, path)
    with pytest.raises(ConfigError, match=r"was written by `flux-perf run --resolution 512 --steps 6`, not by the "
                                          r"gate: pass the results.json of a `pytest -m h100` run"):
        ab_cases(_args(path))


def test_the_results_file_of_a_pytest_baseline_update_is_refused(tmp_path, cli, capsys, monkeypatch):
    """`pytest --flux-update-baselines` writes a results.json whose every latency is `recorded`: it judged
    nothing, and its file read as "nothing to A/B", exit 0 (its command does not start with flux-perf)."""
    copy_budgets(tmp_path / "baselines")
    update = run_gpu_suite_here(capsys, monkeypatch, "-m", "h100", ROOT / "tests/h100/test_latency.py",
                                "--flux-device", "cpu", "--flux-model", "tiny", "--flux-scenarios", "64x64@2",
                                "--flux-stacks", "bf16", f"--flux-baselines-dir={tmp_path / 'baselines'}",
                                f"--flux-report-dir={tmp_path / 'report'}", "--flux-scripted-clock", "1.0",
                                "--flux-update-baselines")
    assert update.returncode == 0, update.stdout[-3000:]
    result = cli("ab", "--base", ROOT, "--head", ROOT, "--undecided-from", tmp_path / "report" / "results.json",
                 "--device", "cpu")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "is a baseline update's (`" in result.stderr and "it recorded bf16-64x64@2), not the gate's" in result.stderr
    assert "nothing to A/B" not in result.stdout


def test_the_undecided_case_is_measured_on_the_suites_model(tmp_path):
    """Real workers on the tiny model (the results file's model): the one undecided case, no other."""
    path = _suite_run(tmp_path, INCONCLUSIVE, case="bf16-512x512@6")
    data = json.loads(path.read_text())
    for record in data["records"]:
        record["model"], record["scenario"] = "tiny", {"id": record["scenario"]["id"].replace("512x512@6", "64x64@2")}
        record["id"] = record["id"].replace("512x512@6", "64x64@2")
        record["gpu"] = None  # measured on a CPU, as this A/B runs it
    path.write_text(json.dumps(data))
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--undecided-from", str(path),
                           "--device", "cpu", "--block-seconds", "0.001", "--json", str(tmp_path / "ab.json"))
    # real workers on a shared CPU: the verdict is the wall clock's; what is asserted is which case ran, on what
    assert result.returncode in (0, 1, EXIT_NOT_JUDGED), result.stdout[-2000:] + result.stderr[-2000:]
    (case,) = json.loads((tmp_path / "ab.json").read_text())["cases"]
    assert (case["stack"], case["scenario"], case["error"]) == ("bf16", "64x64@2", None)
    assert case["base"]["fingerprint"].startswith("tiny-"), case["base"]


def test_what_the_suite_failed_unjudged_is_not_measured_and_never_exit_0(tmp_path, capsys):
    """A missing reference, a fidelity error, a case --flux-strict failed: not A/B-tested, but named and
    exit 6 as the README says (it was "nothing to A/B", exit 0)."""
    missing = LatencyRecord("no-reference", failed=True, missing="record it")
    error = FidelityRecord("error", message="no bf16 baseline image for 512x512@6", failed=True)
    cases, undecidable, _, _ = ab_cases(_args(_suite_run(tmp_path, missing, fidelity=error)))
    assert cases == [] and [item.why for item in undecidable] == [Unjudged.NO_REFERENCE, Unjudged.FIDELITY_ERROR]
    strict = dataclasses.replace(INCONCLUSIVE, strict=True, failed=True)
    cases, undecidable, _, _ = ab_cases(_args(_suite_run(tmp_path, strict)))
    assert cases == [] and [item.why for item in undecidable] == [Unjudged.LATENCY_INCONCLUSIVE]
    assert ab_exit(cases, undecidable) == EXIT_NOT_JUDGED
    assert "fp8-512x512@6: latency inconclusive" in capsys.readouterr().out


@pytest.mark.parametrize("cut", ["interrupted", "empty"])
def test_a_results_file_of_a_run_cut_short_or_with_no_case_is_never_exit_0(tmp_path, cut):
    """Its finished cases all passed, but the rest was never run: "nothing to A/B", exit 0 read green."""
    path = _suite_run(tmp_path, PASSED)
    results = read_results(path)
    if cut == "interrupted":
        results.interrupted = "interrupted by SIGTERM: 4 of 16 cases finished"
    else:
        results.records = []
    write_results(results, path)
    cases, undecidable, _, _ = ab_cases(_args(path))
    assert cases == [] and [item.why for item in undecidable] == [Unjudged.NOT_RUN]
    assert ab_exit(cases, undecidable) == EXIT_NOT_JUDGED
    assert ("4 of 16 cases finished" if cut == "interrupted" else "holds no case") in undecidable[0].line()


def test_a_results_file_of_several_models_asks_which(tmp_path):
    path = _suite_run(tmp_path, INCONCLUSIVE)
    data = json.loads(path.read_text())
    data["records"][0]["model"] = "tiny"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="holds cases of several models \\(synthetic, tiny\\): name the one"):
        ab_cases(_args(path))


def test_one_list_of_what_was_not_judged(tmp_path):
    missing = LatencyRecord("no-reference", failed=True, missing="record it with `flux-perf baselines update`")
    path = _suite_run(tmp_path, missing)
    (item,) = not_judged_in(read_results(path))
    assert item.why is Unjudged.NO_REFERENCE and item.failed and not item.resolvable_by_ab
    assert dataclasses.astuple(item)[:3] == ("fp8-512x512@6", "fp8", "512x512@6")


def _ab_args(path, out):
    return SimpleNamespace(stacks=None, scenarios=None, undecided_from=str(path), model=None, base=str(ROOT),
                           head=str(ROOT), pairs=2, block_seconds=60.0, blocks=1, no_pin=True, tolerance=0.01,
                           base_inject_slowdown=None, head_inject_slowdown=None, control=None, device="cpu",
                           json=str(out))


def test_the_json_names_what_no_ab_can_decide_from_its_first_write(tmp_path, monkeypatch):
    """A CI step reading only `ab --json` sees why the exit is 6 when every A/B verdict is `same`:
    the suite's undecidable items are in the file after the first block, when cut short, and at the end."""
    path = _suite_run(tmp_path, INCONCLUSIVE, fidelity=FLOOR_ONLY)  # fp8: latency to A/B, a gap no A/B decides
    out = tmp_path / "ab.json"
    expected = [{"case": "fp8-512x512@6", "stack": "fp8", "scenario": "512x512@6",
                 "why": "fidelity judged by the floor alone", "detail": FLOOR_ONLY.gap}]
    seen = []

    def run_ab(base, head, wanted, *, on_block, **_):
        assert wanted == [("fp8", "512x512@6")]
        case = _decided("same")
        case.blocks[0] = dataclasses.replace(case.blocks[0], base_s=[1.0, 1.01], head_s=[1.0, 1.0])
        on_block([case])
        seen.append(json.loads(out.read_text()))
        if cut_short:
            raise KeyboardInterrupt
        return [case]

    monkeypatch.setattr(orchestrator, "run_ab", run_ab)
    monkeypatch.setattr("flux_perf.commands.ab.check_runnable", lambda *_: None)  # fp8 runs on the fake, not here
    monkeypatch.setattr("flux_perf.commands.ab.check_same_gpu", lambda *_: None)  # the H100's file, on the fake
    cut_short = True
    with pytest.raises(KeyboardInterrupt):
        run(_ab_args(path, out))
    cut = json.loads(out.read_text())
    assert seen[0]["not_decidable"] == expected and not seen[0]["final"]
    assert cut["not_decidable"] == expected and "interrupted by KeyboardInterrupt" in cut["interrupted"]
    cut_short = False
    assert run(_ab_args(path, out)) == EXIT_NOT_JUDGED
    final = json.loads(out.read_text())
    assert final["final"] and [c["verdict"] for c in final["cases"]] == ["same"]
    assert final["not_decidable"] == expected
    # ab-pairs reads the file with the key and one written before it (without).
    assert measured_pairs(out) == {"fp8-512x512@6": [(1.0, 1.0), (1.01, 1.0)]}
    out.write_text(json.dumps({key: value for key, value in final.items() if key != "not_decidable"}))
    assert measured_pairs(out) == {"fp8-512x512@6": [(1.0, 1.0), (1.01, 1.0)]}


def test_nothing_to_ab_still_writes_what_it_could_not_decide(tmp_path):
    path, out = _suite_run(tmp_path, PASSED, fidelity=FLOOR_ONLY), tmp_path / "ab.json"
    assert run(_ab_args(path, out)) == EXIT_NOT_JUDGED
    written = json.loads(out.read_text())
    assert written["cases"] == [] and [item["why"] for item in written["not_decidable"]] == [Unjudged.FIDELITY_GAP.value]


def test_a_results_file_with_a_failed_case_keeps_the_ab_at_exit_1(tmp_path, capsys):
    """An A/B of the undecided cases does not clear what the suite failed: fed a run with a latency
    FAIL beside an undecided case, it A/B-tests the undecided one and still exits 1 naming the FAIL
    (it said "nothing to A/B", exit 0, when nothing else was undecided)."""
    path = _suite_run(tmp_path, INCONCLUSIVE)
    results = read_results(path)
    failed = next(record for record in results.records if record.id == "bf16-512x512@6")
    failed.latency = LatencyRecord("fail", BudgetRecord(0.417, "relative", "recorded 0.379 s + 10%"))
    write_results(results, path)
    cases, undecidable, _, suite_failed = ab_cases(_args(path))
    assert cases == [("fp8", "512x512@6")] and undecidable == [] and suite_failed == ["bf16-512x512@6: latency fail"]
    assert ab_exit([_decided("same", 1)], undecidable, suite_failed) == 1
    assert "Failed by the suite run" in capsys.readouterr().out
    assert ab_exit([_decided("same", 1)], undecidable, []) == 0


def test_stacks_this_machine_cannot_run_are_one_usage_error_before_any_worker(tmp_path):
    """compile and fast on a CPU: one message naming each stack and why (it was an ERROR per case,
    raised inside the workers after each built its model)."""
    from flux_perf.commands.ab import check_runnable

    with pytest.raises(ConfigError, match=r"cannot A/B here: compile: attn-cudnn needs a CUDA GPU \(running on "
                                          r"cpu\); fast: attn-fp8:static needs a CUDA GPU"):
        check_runnable([("bf16", "64x64@2"), ("compile", "64x64@2"), ("fast", "64x64@2")], "cpu")
    check_runnable([("bf16", "64x64@2"), ("bf16", "64x64@1")], "cpu")


def test_undecided_cases_are_ab_tested_on_the_gpu_model_the_suite_measured_them_on(tmp_path, capsys):
    """An H100 run's undecided case A/B-tested on a CPU (or another card) was cleared by rounds that
    card never ran: `same`, exit 0. Refused before any worker starts, naming both."""
    path = _suite_run(tmp_path, INCONCLUSIVE, case="bf16-512x512@6")
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--undecided-from", str(path),
                           "--device", "cpu", "--pairs", "2")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert (f"--undecided-from {path} measured its undecided cases on NVIDIA H100 80GB HBM3; this A/B would run "
            "them on a CPU (--device cpu): run it on the suite's GPU model") in result.stderr
    assert "preparing" not in result.stdout + result.stderr, "refused before any worker started"
    # Only the cases it A/B-tests count: a file whose unjudged items no A/B decides runs anywhere.
    assert run(_ab_args(_suite_run(tmp_path, PASSED, fidelity=FLOOR_ONLY), tmp_path / "ab.json")) == EXIT_NOT_JUDGED


@pytest.mark.parametrize("case, what, value", [("bf16-512x512", "scenario", "512x512"),
                                               ("nosuch-64x64@2", "stack", "nosuch")])
def test_an_undecided_case_this_build_cannot_read_is_one_usage_error_before_any_worker(tmp_path, case, what, value):
    """A results.json naming a scenario id the parser cannot read (edited, or another build's) went
    to both workers, each failing the case with a ScenarioError: exit 3 after minutes of building."""
    path = make_results(tmp_path / "results.json", {case: [0.4] * 8}, gpu=None)
    results = read_results(path)
    results.records[0].latency, results.records[0].fidelity = INCONCLUSIVE, FidelityRecord("pass")
    write_results(results, path)
    result = run_flux_perf("ab", "--base", str(ROOT), "--head", str(ROOT), "--undecided-from", str(path),
                           "--device", "cpu", "--pairs", "2")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("flux-perf:")]
    assert f"--undecided-from {path}: case {case} names the {what} {value!r}" in line
    assert "preparing" not in result.stdout + result.stderr, "refused before any worker started"
