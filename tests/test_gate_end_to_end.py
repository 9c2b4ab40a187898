"""The gate end to end through the real GPU test files, on the tiny model on the CPU, with a
scripted clock (every round takes the scripted seconds, so no assertion depends on this CPU's
speed): references recorded on purpose, then a planted slow-down fails, a faster case passes and
says so, a case at the budget's edge is INCONCLUSIVE (never a pass; --flux-strict fails it), and a
missing reference and a planted fidelity break at an uncalibrated scenario both fail."""

import hashlib
import json
import re
import shlex

import pytest
from helpers import ROOT, copy_budgets, quiet_host, run_gpu_suite_here

from flux_perf.model import clocks
from flux_perf.store.baselines import BaselineKey, BaselineStore
from flux_perf.store.entries import Band, CalibrationEntry, Spread
from flux_perf.store.provenance import Provenance

SCENARIO = "64x64@2"


@pytest.fixture
def gate(capsys, monkeypatch):
    def run(store, clock, *extra, cache_dir=None):
        return run_gpu_suite_here(
            capsys, monkeypatch, "-m", "h100", ROOT / "tests/h100/test_latency.py", ROOT / "tests/h100/test_fidelity.py",
            "--flux-device", "cpu", "--flux-model", "tiny", "--flux-scenarios", SCENARIO, "--flux-stacks", "bf16",
            f"--flux-baselines-dir={store / 'baselines'}", f"--flux-report-dir={store / 'report'}",
            "--flux-scripted-clock", clock, *extra, cache_dir=cache_dir)

    return run


def records(store):
    return {r["id"]: r for r in json.loads((store / "report" / "results.json").read_text())["records"]}


def warm_then_slow(monkeypatch) -> list:
    """The scripted clock: the first call and the warm-up at 1.000 s, every later round at 1.5 s
    (the H100's fp8-512x512@6 of the eleventh session). Clear the returned list to start over."""
    draws = []

    def wall_ms(clock, start):
        draws.append(start)
        return (1000.0 if len(draws) <= 3 else 1500.0) * (1 + 0.001 * (len(draws) % 3))

    monkeypatch.setattr(clocks.ScriptedClock, "wall_ms", wall_ms)
    return draws


@pytest.fixture
def store(gate, tmp_path):
    """References of bf16 recorded at a scripted 1.000 s a round, with the committed 3 % tolerance,
    and a lossless band for the scenario (on a CPU in fp32 exact variants are identical)."""
    copy_budgets(tmp_path / "baselines", relative_tolerance=0.03)
    update = gate(tmp_path, 1.0, "--flux-update-baselines")
    assert update.returncode == 0, update.stdout[-3000:]
    folder = next((tmp_path / "baselines").glob("cpu-*/tiny-*"))
    band = CalibrationEntry(Band(0.9999, 60.0, 1e-4), {}, {}, Provenance.now())
    BaselineStore(tmp_path / "baselines").write_calibration(BaselineKey(folder.parent.name, folder.name, SCENARIO),
                                                            band, force=True)
    return tmp_path


def test_a_planted_slowdown_fails_the_latency_test(store, gate):
    result = gate(store, 1.10)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "FAILED tests/h100/test_latency.py::test_latency_budget[bf16-64x64@2]" in result.stdout
    # One sentence that parses, then what the run could see.
    assert re.search(rf"bf16-{SCENARIO}: median 1\.\d{{3}} s \(95% CI 1\.\d{{3}}-1\.\d{{3}} s, \d+ rounds\) is over budget "
                     r"1\.030 s \(recorded 1\.000 s \+ 3%\): fail\. This run could see slow-downs of \+\d+\.\d% and more\. "
                     rf"The code or the machine\? .*flux-perf ab --base <checkout of the reference's code> --head \. "
                     rf"--stacks bf16 --scenarios {SCENARIO}\n",
                     result.stdout), result.stdout[-3000:]
    latency = records(store)[f"bf16-{SCENARIO}"]["latency"]
    assert latency["verdict"] == "fail" and latency["checks"][0]["ratio"]["low"] > 1.03


def test_enforced_targets_that_apply_to_no_case_say_so(store, gate):
    """The committed targets are fast's on the H100: an opted-in check that checked nothing says so."""
    result = gate(store, 1.0, "--flux-enforce-targets")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "--flux-enforce-targets: no case of this run has a target for this GPU" in result.stdout


def test_a_faster_case_passes_and_says_so(store, gate):
    result = gate(store, 0.95, "-W", "always")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "faster than its reference by 5." in result.stdout
    # The run's own folder, model and device: a bare command re-recorded the checkout's baselines/.
    assert (f"re-record it on purpose (flux-perf baselines update --stacks bf16 --scenarios {SCENARIO} --model tiny "
            f"--device cpu --baselines-dir {store / 'baselines'})") in result.stdout, result.stdout[-3000:]
    latency = records(store)[f"bf16-{SCENARIO}"]["latency"]
    assert latency["verdict"] == "pass" and latency["faster_by"] == pytest.approx(0.05, abs=0.005)
    assert "pass, faster 5." in (store / "report" / "summary.md").read_text()


def test_a_case_at_the_budgets_edge_is_inconclusive_never_a_pass(store, gate):
    result = gate(store, 1.03, "--flux-max-rounds", "16")
    last = result.stdout.strip().splitlines()[-1]
    assert "1 inconclusive" in last and "passed" in last, result.stdout[-3000:]
    assert result.returncode == 6, "nothing failed, but a case could not be judged: not the exit code of a pass"
    assert f"bf16-{SCENARIO}: latency inconclusive (undecided at the cap of 16 rounds)" in result.stdout
    section = result.stdout.split("= flux-perf =")[-1]
    assert "exit 6: nothing failed, but 1 case(s) could not be judged" in section
    assert "; against recorded 1.000 s + 3% (1.030 s); it could see slow-downs of +" in section, "what it could see"
    assert section.count(f"bf16-{SCENARIO}") == 2, "named once in the list, once in the command that decides it"
    results = store / "report" / "results.json"
    assert (f"decide bf16-{SCENARIO} on this machine with the interleaved A/B against the base: flux-perf ab --base "
            f"<checkout of the reference's code> --head . --undecided-from {results}") in section, section
    assert "flux_perf.plugin.Inconclusive" not in result.stdout, "the reason, not a class path"
    record = records(store)[f"bf16-{SCENARIO}"]
    assert record["latency"]["verdict"] == "inconclusive" and record["rounds"] == 16, "rounds doubled to the cap"
    assert "undecided at the cap of 16 rounds" in record["stopped"]
    assert "## Not judged (never a pass)" in (store / "report" / "summary.md").read_text()
    strict = gate(store, 1.03, "--flux-strict", "--flux-max-rounds", "8")
    assert strict.returncode == 1, strict.stdout[-3000:]
    assert ("is inconclusive against budget 1.030 s (recorded 1.000 s + 3%), undecided at the cap of 8 rounds "
            "(--flux-strict). This run could see slow-downs of +") in strict.stdout, strict.stdout[-3000:]


def test_a_run_that_selects_no_case_replaces_the_last_report(store, gate):
    """`-k nomatch` measured nothing: it fails (a gate that judged nothing) and its report says so,
    instead of leaving the last run's passing results.json for `ab --undecided-from` to read."""
    before = json.loads((store / "report" / "results.json").read_text())
    assert before["records"], "the store's update wrote a report with its case"
    result = gate(store, 1.0, "-k", "nomatch")
    assert result.returncode == 1, result.stdout[-3000:]
    assert f"no GPU case was selected: -k, -m, --deselect or --lf left out bf16-{SCENARIO}" in result.stdout
    results = json.loads((store / "report" / "results.json").read_text())
    assert results["records"] == [] and results["not_selected"] == [f"bf16-{SCENARIO}"]
    assert f"neither measured nor judged: bf16-{SCENARIO}" in (store / "report" / "summary.md").read_text()


def test_a_run_stopped_by_x_says_so_in_its_report(store, gate):
    """-x stops after the first failure: the report named no case left and read as whole."""
    result = gate(store, 1.10, "--flux-scenarios", f"{SCENARIO},48x48@2", "-x")
    assert result.returncode == 1, result.stdout[-3000:]
    results = json.loads((store / "report" / "results.json").read_text())
    assert results["interrupted"].startswith("interrupted by -x/--maxfail (stopping after 1 failures): 1 of 2 cases"), \
        results["interrupted"]
    assert "interrupted by -x/--maxfail" in (store / "report" / "summary.md").read_text()


def test_lf_re_runs_the_case_the_last_run_could_not_judge(store, gate, tmp_path):
    """pytest's last-failed list drops skip-like outcomes: a run that exited 6 and was re-run with
    --lf re-ran everything (nothing had failed) or, beside a failure, left the undecided case out."""
    cache = tmp_path / "pytest-cache"
    undecided = gate(store, 1.03, "--flux-max-rounds", "8", cache_dir=cache)
    assert undecided.returncode == 6, undecided.stdout[-3000:]
    last_failed = json.loads((cache / "v" / "cache" / "lastfailed").read_text())
    assert list(last_failed) == [f"tests/h100/test_latency.py::test_latency_budget[bf16-{SCENARIO}]"]
    rerun = gate(store, 1.0, "--lf", cache_dir=cache)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "run-last-failure: rerun previous 1 failure" in rerun.stdout, rerun.stdout[-3000:]
    assert rerun.stdout.strip().splitlines()[-1].startswith("=") and " 1 passed in " in rerun.stdout, \
        "only the undecided test ran (pytest skips test_fidelity.py, which had no failure)"
    assert records(store)[f"bf16-{SCENARIO}"]["latency"]["verdict"] == "pass"
    assert not (cache / "v" / "cache" / "lastfailed").exists() or \
        json.loads((cache / "v" / "cache" / "lastfailed").read_text()) == {}, "judged now: off the list"


def test_a_slow_down_that_sets_in_after_the_warm_up_is_disturbed_never_a_failure_of_the_code(store, gate, monkeypatch):
    """The H100 case of the eleventh session, scripted: the first call and the warm-up run at the
    reference's 1.000 s, every timed round at 1.5 s. The same code ran within its budget seconds
    before, so the machine changed: DISTURBED, its own outcome, not judged (exit 6, which the CI
    jobs hand to the same-machine A/B), never a failure; --flux-strict fails it."""
    draws = warm_then_slow(monkeypatch)
    result = gate(store, 1.0)
    last = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 6 and "1 disturbed" in last and "failed" not in last, result.stdout[-3000:]
    assert "slower than this case's last warm-up calls" in result.stdout and "the machine changed" in result.stdout
    assert f"bf16-{SCENARIO}: disturbed (" in result.stdout.split("= flux-perf =")[-1], "in the exit-6 list"
    latency = records(store)[f"bf16-{SCENARIO}"]["latency"]
    assert latency["verdict"] == "disturbed" and not latency["failed"]
    assert latency["checks"][0]["verdict"] == "fail", "against the reference alone it would have failed"
    draws.clear()
    strict = gate(store, 1.0, "--flux-strict")
    assert strict.returncode == 1 and "FAILED tests/h100/test_latency.py::test_latency_budget" in strict.stdout
    assert "the timed rounds were disturbed" in strict.stdout and "(--flux-strict)" in strict.stdout


def test_a_slow_case_disturbed_on_another_rank_is_disturbed_on_the_rank_that_judges(store, gate, monkeypatch):
    """Under torchrun the rounds judged are the slowest rank's, but each rank read only its own
    card: a foreign process on rank 1's GPU left rank 0, which judges and writes, calling the
    slow-down a failure of the code. The runner now gathers every rank's conditions (here a second
    rank is stood in for by the gather)."""
    from flux_perf.instrument import distributed, telemetry

    other = {"pid": 4242, "name": "python3", "used_memory_mib": 2048.0}

    def two_ranks(value):
        from dataclasses import replace
        return [value, replace(value, disturbed=(telemetry.Flag.OTHER_PROCESSES,), other_processes=(other,))]

    monkeypatch.setattr(distributed, "gathered", two_ranks)
    result = gate(store, 1.10)
    last = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 6 and "1 disturbed" in last and "failed" not in last, result.stdout[-3000:]
    assert "rank 1: other processes on the GPU: pid 4242 python3 (2048 MiB)" in result.stdout
    assert records(store)[f"bf16-{SCENARIO}"]["latency"]["verdict"] == "disturbed"


def test_an_update_whose_rounds_slow_down_after_the_warm_up_records_nothing(store, gate, monkeypatch):
    """On a steady clock (a GPU's events; here the scripted one) a recording has no budget to vouch
    for its warm-up, and rounds 50 % slower than the warm-up seconds before would become a
    reference too slow for every later run: refused, and the recorded 1.000 s kept."""
    folder = next((store / "baselines").glob("cpu-*/tiny-*"))
    before = (folder / "latency.json").read_text()
    warm_then_slow(monkeypatch)
    update = gate(store, 1.0, "--flux-update-baselines")
    assert update.returncode == 1, update.stdout[-3000:]
    assert "refusing to record references from disturbed rounds (the timed rounds (median 1.5" in update.stdout
    assert "slower than this case's last warm-up calls" in update.stdout
    assert (folder / "latency.json").read_text() == before, "nothing written"
    assert records(store)[f"bf16-{SCENARIO}"]["latency"]["verdict"] == "disturbed"


def test_a_missing_reference_and_a_fidelity_break_at_an_uncalibrated_scenario_both_fail(store, gate):
    folder = next((store / "baselines").glob("cpu-*/tiny-*"))
    (folder / "latency.json").unlink()
    (folder / "calibration.json").unlink()
    result = gate(store, 1.0, "--flux-plant", "noise:0.01")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "2 failed" in result.stdout.strip().splitlines()[-1]
    assert f"record it with `flux-perf baselines update --stacks bf16 --scenarios {SCENARIO} --model tiny " \
           f"--device cpu --baselines-dir {store / 'baselines'}`" in result.stdout
    fidelity = records(store)[f"bf16-{SCENARIO}"]["fidelity"]
    assert fidelity["verdict"] == "fail" and "below the floor 0.9999" in fidelity["reasons"][0]
    assert fidelity["gap"].startswith("no fidelity calibration for 64x64@2")


def test_a_failure_whose_test_was_deselected_still_fails_the_run(store, gate):
    """`-k fidelity` leaves the latency test out, but the case is still measured and judged: a latency
    FAIL or a missing reference in the report beside exit 0 read green (it did)."""
    result = gate(store, 1.10, "-k", "fidelity")
    assert result.returncode == 1, result.stdout[-3000:]
    assert f"FAILED: bf16-{SCENARIO}: latency fail in the report, and no test of this run failed it" in result.stdout
    (next((store / "baselines").glob("cpu-*/tiny-*")) / "latency.json").unlink()
    result = gate(store, 1.0, "-k", "fidelity")
    assert result.returncode == 1, result.stdout[-3000:]
    assert f"FAILED: bf16-{SCENARIO}: latency no-reference in the report" in result.stdout


@pytest.mark.parametrize("option, said", [
    ("--benchmark-skip", "its test did not run: skipped (Skipping benchmark (--benchmark-skip active).)"),
    ("--setup-only", "its test did not run: --setup-only ran only its fixtures"),
])
def test_a_failure_whose_test_was_skipped_or_not_run_says_so(store, gate, option, said):
    """Under --benchmark-skip (pytest-benchmark skips the latency test) and --setup-only the case is
    measured by a fixture, its test collected but not run: the line said `its test was not selected`."""
    result = gate(store, 1.10, option)
    assert result.returncode == 1, result.stdout[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"FAILED: bf16-{SCENARIO}: latency"))
    assert line.endswith(f"in the report, and no test of this run failed it ({said})"), line


def test_a_fidelity_gap_is_its_own_outcome_never_a_pass(store, gate):
    """Fidelity judged by the floor alone: exit 6, and the test is a GAP (a JUnit <skipped>), not a
    pass that CI's test report would show green beside that exit (it was one)."""
    (next((store / "baselines").glob("cpu-*/tiny-*")) / "calibration.json").unlink()
    result = gate(store, 1.0, "--junitxml", str(store / "junit.xml"))
    last = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 6 and "1 passed" in last and "1 gap" in last, result.stdout[-3000:]
    junit = (store / "junit.xml").read_text()
    assert re.search(r'name="test_fidelity_floor\[bf16-64x64@2\]"[^>]*>\s*<skipped[^>]*FidelityGap: bf16-64x64@2: '
                     r"no fidelity calibration for 64x64@2", junit), junit
    # A reader of the files alone sees it too (results.json's verdict said "pass").
    assert records(store)[f"bf16-{SCENARIO}"]["fidelity"]["verdict"] == "gap"
    assert re.search(rf"\| {SCENARIO} \| bf16 \| [0-9.]+ \| [^|]+ \| [^|]+ \| gap \| no fidelity calibration",
                     (store / "report" / "summary.md").read_text())
    gap = records(store)[f"bf16-{SCENARIO}"]["fidelity"]["gap"]
    # calibrate's own stacks, as the stale-calibration hint: every default stack's spread, not bf16's alone
    assert gap.endswith(f"(calibrate it with `flux-perf calibrate --write --scenarios {SCENARIO} "
                        f"--model tiny --device cpu --baselines-dir {store / 'baselines'}`)"), gap
    strict = gate(store, 1.0, "--flux-strict")
    assert strict.returncode == 1 and "(--flux-strict)" in strict.stdout, strict.stdout[-3000:]


def test_a_case_the_selection_left_out_is_named_in_the_report_and_to_the_ab(store, gate, capsys):
    """`-k "not 48x48"` leaves a whole case out: the run passes on what it judged (pytest's meaning
    of -k), but results.json and summary.md name the case as neither measured nor judged, and an
    A/B reading that file says so instead of taking it for the whole gate (both were silent)."""
    from types import SimpleNamespace

    from flux_perf.commands.ab import ab_cases

    result = gate(store, 1.0, "--flux-scenarios", f"{SCENARIO},48x48@2", "-k", "not 48x48")
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(records(store)) == {f"bf16-{SCENARIO}"}
    results = json.loads((store / "report" / "results.json").read_text())
    assert results["not_selected"] == ["bf16-48x48@2"]
    summary = (store / "report" / "summary.md").read_text()
    assert "**Not selected**: 1 case(s) this run's options name were left out" in summary
    assert "neither measured nor judged: bf16-48x48@2" in summary
    capsys.readouterr()
    args = SimpleNamespace(stacks=None, scenarios=None, undecided_from=str(store / "report" / "results.json"),
                           model=None)
    cases, undecidable, _, failed = ab_cases(args)
    assert (cases, undecidable, failed) == ([], [], [])
    assert "left out by -k, -m, --deselect or --lf, neither measured nor judged: bf16-48x48@2" in \
        capsys.readouterr().out
    # A case with one of its tests selected still runs and is judged (no reference: a FAIL), not listed.
    partly = gate(store, 1.0, "--flux-scenarios", f"{SCENARIO},48x48@2", "-k", "latency or not 48x48")
    assert partly.returncode == 1 and "bf16-48x48@2" in records(store), partly.stdout[-3000:]
    assert json.loads((store / "report" / "results.json").read_text())["not_selected"] == []


def committed_baselines() -> dict:
    """Every file under the checkout's baselines/ with its hash: a hint followed must change none."""
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ROOT / "baselines").rglob("*")) if p.is_file()}


def follow(command: str, cli, monkeypatch, where) -> None:
    """Run a printed `flux-perf ...` command word for word, from another folder (its report lands there)."""
    words = shlex.split(command)
    assert words[0] == "flux-perf", command
    monkeypatch.chdir(where)
    done = cli(*words[1:])
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_command_a_missing_reference_names_records_it_in_the_runs_own_folder(store, gate, cli, monkeypatch):
    """An outside-in audit: with --flux-baselines-dir, the printed `record it with` command had no
    --baselines-dir, and following it wrote into the checkout's committed baselines/ while this
    run's reference stayed missing. Followed word for word, it records the case where the run looks."""
    quiet_host(monkeypatch)  # an update refuses rounds timed under CPU contention
    folder = next((store / "baselines").glob("cpu-*/tiny-*"))
    (folder / "latency.json").unlink()
    committed = committed_baselines()
    missing = gate(store, 1.0)
    assert missing.returncode == 1, missing.stdout[-3000:]
    command = re.search(r"record it with `(flux-perf baselines update [^`]*)`", missing.stdout)[1]
    assert shlex.split(command)[-2:] == ["--baselines-dir", str(store / "baselines")], command
    follow(command, cli, monkeypatch, store)
    assert list(json.loads((folder / "latency.json").read_text())["entries"][SCENARIO]) == ["bf16"]
    assert committed_baselines() == committed, "the checkout's baselines/ is left alone"
    gate(store, 1.0)
    assert records(store)[f"bf16-{SCENARIO}"]["latency"]["verdict"] != "no-reference"


def test_the_bootstrap_records_this_runs_own_cases_in_its_own_folder(gate, cli, monkeypatch, tmp_path):
    """The bootstrap (nothing recorded for this GPU and weights) named a bare `flux-perf baselines
    update`: the guide's four default scenarios, in the checkout's baselines/, leaving this run's own
    scenario NO-REFERENCE. Now it names this run's stacks, scenarios and folder (quoted: a space)."""
    quiet_host(monkeypatch)
    store = tmp_path / "a store"
    copy_budgets(store / "baselines", relative_tolerance=0.03)
    committed = committed_baselines()
    empty = gate(store, 1.0)
    assert empty.returncode == 1, empty.stdout[-3000:]
    unrecorded = json.loads((store / "report" / "results.json").read_text())["unrecorded"]
    command = unrecorded.split("with: ")[-1]
    assert command == (f"flux-perf baselines update --stacks bf16 --scenarios {SCENARIO} --model tiny --device cpu "
                       f"--baselines-dir {shlex.quote(str(store / 'baselines'))}"), unrecorded
    assert f"NO REFERENCES: {unrecorded}" in empty.stdout
    follow(command, cli, monkeypatch, tmp_path)
    assert committed_baselines() == committed, "the checkout's baselines/ is left alone"
    folder = next((store / "baselines").glob("cpu-*/tiny-*"))
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{SCENARIO}.json", f"{SCENARIO}.latents.npy", f"{SCENARIO}.png", "calibration.json", "fidelity.json",
        "latency.json"], "this run's one case and its scenario's calibration, nothing of the default four"
    judged = gate(store, 1.0)
    record = records(store)[f"bf16-{SCENARIO}"]
    assert "NO REFERENCES" not in judged.stdout and record["latency"]["verdict"] != "no-reference"
    assert record["fidelity"]["verdict"] == "pass", record["fidelity"]


@pytest.mark.parametrize("stamped", [True, False], ids=["stamped", "recorded-before-stamps"])
def test_references_recorded_on_another_gpu_and_copied_here_are_no_reference(gate, monkeypatch, tmp_path, stamped):
    """An H100 PCIe's folder copied under this machine's GPU slug (`cp -r`: the folder a run with
    nothing recorded reads): the latency passed against the other card's rounds, "faster by 10 %",
    only the bf16 record beside them refused. `stamped` False: entries recorded before they said
    where (as every committed one)."""
    import platform
    import shutil

    from flux_perf.instrument.machine import Machine

    baselines = tmp_path / "baselines"
    copy_budgets(baselines, relative_tolerance=0.03)
    with monkeypatch.context() as other_card:
        other_card.setattr(Machine, "gpu_name", property(lambda self: "NVIDIA H100 PCIe"))
        update = gate(tmp_path, 1.0, "--flux-update-baselines")
    assert update.returncode == 0, update.stdout[-3000:]
    recorded = next(baselines.glob("nvidia-h100-pcie/tiny-*"))
    here = baselines / f"cpu-{platform.machine().lower()}" / recorded.name
    shutil.copytree(recorded, here)
    latency_json = here / "latency.json"
    if not stamped:
        data = json.loads(latency_json.read_text())
        for entry in data["entries"][SCENARIO].values():
            for stamp in ("gpu", "gpu_slug", "fingerprint"):
                entry.pop(stamp, None)
        latency_json.write_text(json.dumps(data))
    result = gate(tmp_path, 0.9)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "FAILED tests/h100/test_latency.py::test_latency_budget[bf16-64x64@2]" in result.stdout
    fix = (f"Record this machine's own with: flux-perf baselines update --stacks bf16 --scenarios {SCENARIO} "
           f"--model tiny --device cpu --baselines-dir {baselines}")
    said = (f"recorded on GPU 'NVIDIA H100 PCIe' (nvidia-h100-pcie) with weights {recorded.name}, read for GPU "
            f"{here.parent.name} with weights {recorded.name}") if stamped else \
        (f"the bf16 baseline beside them ({SCENARIO}.json) was recorded on GPU 'NVIDIA H100 PCIe' (nvidia-h100-pcie) "
         f"with weights {recorded.name}, not GPU {here.parent.name} with weights {recorded.name}")
    latency = records(tmp_path)[f"bf16-{SCENARIO}"]["latency"]
    assert latency["verdict"] == "no-reference" and said in latency["missing"] and fix in latency["missing"], latency
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"bf16-{SCENARIO}: NO-REFERENCE: {latency_json} [{SCENARIO}]" in summary and said in summary
    assert "pass, faster" not in summary


def test_a_stale_reference_names_the_runs_own_command(store, gate):
    """A stack redefined since its reference, a spread measured on other components: the stale
    reasons named `(--flux-update-baselines)` and `(flux-perf calibrate --write)`, which record
    into the checkout's baselines/ (this run reads another folder) and drop the run's model."""
    folder = next((store / "baselines").glob("cpu-*/tiny-*"))
    latency_json = folder / "latency.json"
    data = json.loads(latency_json.read_text())
    data["entries"][SCENARIO]["bf16"]["stack"] = "attn-sdpa"  # what bf16 was before, say
    latency_json.write_text(json.dumps(data))
    key = BaselineKey(folder.parent.name, folder.name, SCENARIO)
    spread = CalibrationEntry(Band(0.9999, 60.0, 1e-4), {"bf16": Spread()}, {"bf16": "attn-sdpa"}, Provenance.now())
    BaselineStore(store / "baselines").write_calibration(key, spread, force=True)
    result = gate(store, 1.0, "-W", "always")
    assert result.returncode == 0, result.stdout[-3000:]
    options = f"--scenarios {SCENARIO} --model tiny --device cpu --baselines-dir {store / 'baselines'}"
    record = records(store)[f"bf16-{SCENARIO}"]
    assert (f"recorded for the components attn-sdpa, the stack is now bf16: record it again on purpose with "
            f"`flux-perf baselines update --stacks bf16 {options}`") in record["latency"]["stale"], record["latency"]
    assert (f"the calibration measured bf16's spread on the components attn-sdpa, the stack is now bf16: calibrate "
            f"again with `flux-perf calibrate --write --stacks bf16 {options}`") in record["fidelity"]["stale"]
    assert f"calibrate again with `flux-perf calibrate --write --stacks bf16 {options}`" in \
        (store / "report" / "summary.md").read_text()
