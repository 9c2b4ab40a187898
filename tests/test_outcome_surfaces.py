"""What a CI or a developer reads after a run never shows a case that was not judged as a pass:
pytest's short test summary (`-r`), pytest-benchmark's JSON and the JUnit XML, and the report of a
run `--sw` stopped, through the real GPU test files on the tiny model with the scripted clock (no
assertion depends on this CPU's speed)."""

import json
import re

from test_gate_end_to_end import SCENARIO, gate, store, warm_then_slow  # noqa: F401 (fixtures)

LATENCY = f"tests/h100/test_latency.py::test_latency_budget[bf16-{SCENARIO}]"
FIDELITY = f"tests/h100/test_fidelity.py::test_fidelity_floor[bf16-{SCENARIO}]"


def short_summary(result) -> list[str]:
    text = result.stdout.split("short test summary info")[-1] if "short test summary info" in result.stdout else ""
    return [line for line in text.splitlines()[1:] if not line.startswith("=")]


def benchmark_of(path) -> dict:
    (bench,) = json.loads(path.read_text())["benchmarks"]
    assert bench["fullname"] == LATENCY and "stats" in bench, "pytest-benchmark's schema kept"
    return bench["extra_info"]


def junit_case(path, name: str) -> str:
    return re.search(rf'<testcase [^>]*name="{re.escape(name)}"[^>]*(?:/>|>.*?</testcase>)', path.read_text(), re.S)[0]


def test_an_inconclusive_case_is_in_the_short_summary_the_benchmark_json_and_junit(store, gate):
    """pytest's short summary listed pytest's outcomes only: `-ra` showed nothing of the undecided
    case and `-rA` only its PASSED fidelity test; the benchmark JSON held it as any measured case."""
    bench, junit = store / "bench.json", store / "junit.xml"
    result = gate(store, 1.03, "--flux-max-rounds", "8", "-ra", f"--benchmark-json={bench}", f"--junitxml={junit}")
    assert result.returncode == 6, result.stdout[-3000:]
    (line,) = short_summary(result)
    assert line.startswith(f"INCONCLUSIVE {LATENCY} - bf16-{SCENARIO}: median 1.030 s "), line
    assert "is inconclusive against budget 1.030 s (recorded 1.000 s + 3%), undecided at the cap of 8 rounds" in line
    extra = benchmark_of(bench)
    assert extra["flux_outcome"] == "inconclusive" and extra["latency"]["verdict"] == "inconclusive"
    assert extra["flux_reason"].startswith(f"bf16-{SCENARIO}: median 1.030 s"), extra["flux_reason"]
    case = junit_case(junit, f"test_latency_budget[bf16-{SCENARIO}]")
    assert f'<skipped type="pytest.skip" message="Inconclusive: bf16-{SCENARIO}: median' in case, case
    everything = gate(store, 1.03, "--flux-max-rounds", "8", "-rA")
    passed, undecided = short_summary(everything)
    assert passed == f"PASSED {FIDELITY}" and undecided.startswith(f"INCONCLUSIVE {LATENCY} - bf16-{SCENARIO}: median")
    default = gate(store, 1.03, "--flux-max-rounds", "8")  # -rfE: failures and errors only, none here
    assert "short test summary info" not in default.stdout, default.stdout[-3000:]


def test_a_disturbed_case_and_a_failure_are_told_apart_in_the_summary_and_the_benchmark_json(store, gate, monkeypatch):
    """The benchmark JSON's extra_info says what the test said: `passed` only for a judged pass."""
    bench, junit = store / "bench.json", store / "junit.xml"
    passed = gate(store, 1.0, f"--benchmark-json={bench}")
    assert passed.returncode == 0 and benchmark_of(bench)["flux_outcome"] == "passed"
    assert benchmark_of(bench)["flux_reason"] is None
    failed = gate(store, 1.10, "-rs", f"--benchmark-json={bench}")
    assert failed.returncode == 1 and not short_summary(failed), "-rs: a failure is not a skip"
    extra = benchmark_of(bench)
    assert extra["flux_outcome"] == "failed" and "is over budget 1.030 s" in extra["flux_reason"]
    warm_then_slow(monkeypatch)
    result = gate(store, 1.0, "-rs", f"--benchmark-json={bench}", f"--junitxml={junit}")
    assert result.returncode == 6, result.stdout[-3000:]
    (line,) = short_summary(result)
    assert line.startswith(f"DISTURBED {LATENCY} - bf16-{SCENARIO}: median 1.5") and "the machine changed" in line
    assert benchmark_of(bench)["flux_outcome"] == "disturbed"
    assert 'message="Disturbed: bf16-' in junit_case(junit, f"test_latency_budget[bf16-{SCENARIO}]")


def test_a_fidelity_gap_is_in_the_short_summary(store, gate):
    (next((store / "baselines").glob("cpu-*/tiny-*")) / "calibration.json").unlink()
    result = gate(store, 1.0, "-ra")
    assert result.returncode == 6, result.stdout[-3000:]
    (line,) = short_summary(result)
    assert line.startswith(f"GAP {FIDELITY} - bf16-{SCENARIO}: no fidelity calibration for {SCENARIO}"), line


def test_a_run_stopped_by_stepwise_says_so_not_keyboard_interrupt(store, gate, tmp_path):
    """--sw stops at the first failure through pytest's Interrupted (exit 2, as Ctrl-C): the report
    said `interrupted by KeyboardInterrupt`, a stop no one asked for. An undecided case does not
    stop it (as -x: not a failure); the case without a reference does."""
    result = gate(store, 1.03, "--flux-max-rounds", "8", "--sw", "--flux-scenarios", f"{SCENARIO},48x48@2",
                  cache_dir=tmp_path / "cache")
    assert result.returncode == 2 and "1 failed, 1 passed, 1 inconclusive" in result.stdout, result.stdout[-3000:]
    interrupted = json.loads((store / "report" / "results.json").read_text())["interrupted"]
    assert interrupted == ("interrupted by --sw (Test failed, continuing from this test next run.): "
                           "2 of 2 cases finished"), interrupted
    assert "interrupted by --sw" in (store / "report" / "summary.md").read_text()


def test_pytest_benchmarks_profiler_adds_no_round_to_the_timed_ones(store, gate):
    """`--benchmark-cprofile` makes pedantic call the case once more per profiler loop, under cProfile,
    after the timed rounds: those calls were appended to the rounds the gate judges and an update records
    (8 + 3 rounds here, the profiled ones slowed by the profiler on a real machine)."""
    bench = store / "bench.json"
    result = gate(store, 1.0, "--benchmark-cprofile=tottime", "--benchmark-cprofile-loops=3",
                  f"--benchmark-json={bench}")
    assert result.returncode == 0, result.stdout[-3000:]
    (record,) = json.loads((store / "report" / "results.json").read_text())["records"]
    assert record["rounds"] == 8 and len(record["wall_samples_s"]) == 8, (record["rounds"], record["stopped"])
    assert json.loads(bench.read_text())["benchmarks"][0]["stats"]["rounds"] == 8


def test_a_run_without_pytest_benchmark_errors_the_latency_test_without_an_internal_error(store, gate):
    """`-p no:benchmark`: the plugin's pytest-benchmark hook was unknown to pluggy, an INTERNALERROR
    traceback before any test (exit 3). Now the latency test errors on its missing fixture (never a
    pass) and the fidelity test still runs."""
    result = gate(store, 1.0, "-p", "no:benchmark")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert "fixture 'benchmark' not found" in result.stdout and "1 passed, 1 error" in result.stdout
