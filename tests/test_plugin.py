"""The pytest plugin end to end: the real GPU test files run on the tiny model on the CPU,
in a subprocess, exactly as a user runs them."""

import json
import os
from types import SimpleNamespace

import pytest
from helpers import ROOT, copy_budgets, make_results, run_gpu_suite_here, run_pytest, quiet_host

from flux_perf.report.records import read_results
from flux_perf.report.verdicts import BudgetRecord, LatencyRecord


@pytest.fixture
def here(capsys, monkeypatch):
    """pytest ARGS in this process, from the checkout's root (a subprocess costs seconds of imports)."""
    return lambda *args: run_gpu_suite_here(capsys, monkeypatch, *args)


@pytest.fixture
def store(tmp_path):
    copy_budgets(tmp_path / "baselines")
    return tmp_path


def gpu_suite(store, *extra):
    return ("-m", "h100", "tests/h100", "--flux-device", "cpu", "--flux-model", "tiny",
            "--flux-scenarios", "64x64@2", f"--flux-baselines-dir={store / 'baselines'}",
            f"--flux-report-dir={store / 'report'}", "--flux-rounds", "3", *extra)


def test_gpu_suite_on_cpu_update_then_gate(store, here, monkeypatch):
    # A scripted clock and a quiet host: the outcome is the plugin's, never this CPU's speed or load
    # (a busy host's `disturbed` is tested in test_session_report.py).
    quiet_host(monkeypatch)
    clock = ("--flux-scripted-clock", "1.0")
    first = here(*gpu_suite(store, "--flux-stacks", "bf16,fused-qkv,cudnn", "--flux-update-baselines", *clock))
    # Nothing failed, but a case could not run here: not the exit code of a pass.
    assert first.returncode == 6, first.stdout[-3000:]
    assert "cudnn-64x64@2: not run (attn-cudnn needs a CUDA GPU (running on cpu))" in first.stdout
    assert first.stdout.split("= flux-perf =")[-1].count("cudnn-64x64@2") == 1, "named once, in the exit-6 list"
    assert "reference updated: cpu-" in first.stdout and "# flux-perf summary" in first.stdout
    assert "64x64@2 fused-qkv: latency new" in first.stdout, "every stack's reference is recorded"
    # Progress reaches the terminal past output capture (a passing test's captured output is dropped).
    assert "[flux-perf] building tiny model for stack bf16" in first.stdout
    # A stack this machine cannot run is reported with its reason, not silently dropped.
    first_results = json.loads((store / "report" / "results.json").read_text())
    assert "--flux-stacks bf16,fused-qkv,cudnn" in first_results["command"]
    skipped = first_results["skipped"]
    assert skipped == [{"stack": "cudnn", "components": "attn-cudnn", "scenario": "64x64@2",
                        "reason": "attn-cudnn needs a CUDA GPU (running on cpu)"}]
    assert "| 64x64@2 | cudnn | attn-cudnn | attn-cudnn needs a CUDA GPU" in (store / "report" / "summary.md").read_text()
    second = here(*gpu_suite(store, "--flux-stacks", "bf16,fused-qkv", "--benchmark-json",
                             str(store / "bench.json"), *clock))
    results = json.loads((store / "report" / "results.json").read_text())
    assert {r["latency"]["verdict"] for r in results["records"]} == {"pass"}, second.stdout[-3000:]
    # No calibration for this scenario: fidelity judged by the floor alone, which is said and exits 6.
    assert second.returncode == 6, second.stdout[-3000:]
    assert "## Fidelity gaps" in (store / "report" / "summary.md").read_text()
    assert "fidelity judged by the floor alone (no fidelity calibration for 64x64@2" in second.stdout
    assert {r["latency"]["budget"]["kind"] for r in results["records"]} == {"relative"}
    assert all(r["latency"]["budget"]["recorded_rounds"] == 3 for r in results["records"])
    bench = json.loads((store / "bench.json").read_text())
    latency = [b for b in bench["benchmarks"] if b["name"].startswith("test_latency_budget")]
    assert len(latency) == 2 and all(b["stats"]["rounds"] >= 3 for b in latency)
    assert latency[0]["extra_info"]["stages_ms"]["denoise"] > 0


def test_the_terminal_names_each_case_not_judged_once(tmp_path):
    """The flux-perf section: a case in the exit-6 list is left out of the summary above it, and no
    INCONCLUSIVE test repeats it; a test that raised Inconclusive on a case flux judged keeps its line."""
    from flux_perf.plugin.finish import section_lines
    from flux_perf.report.judged import not_judged_in

    results = read_results(make_results(tmp_path / "results.json", {"fp8-512x512@6": [0.4] * 8,
                                                                     "bf16-512x512@6": [0.4] * 8}))
    for record in results.records:
        record.latency = LatencyRecord("inconclusive" if record.stack == "fp8" else "pass",
                                       BudgetRecord(0.417, "relative", "recorded 0.379 s + 10%"))
    results.skipped = [{"stack": "fa3", "components": "attn-fa3", "scenario": "512x512@6", "reason": "no fa3"}]
    flux = SimpleNamespace(results=lambda: results, unrecorded=None, baseline_updates=[],
                           config=SimpleNamespace(enforce_targets=False))
    undecided = [SimpleNamespace(nodeid=f"t.py::test[{case}]", longrepr=("t.py", 1, "Inconclusive: own reason"),
                                 flux_inconclusive=case, flux_outcome="inconclusive")
                 for case in ("fp8-512x512@6", "bf16-512x512@6")]

    def section(listed) -> str:
        lines = section_lines(flux, SimpleNamespace(stash={}), {"results": tmp_path}, undecided, listed)
        return "\n".join(line for line, _ in lines)

    exit_6 = section(not_judged_in(results))
    assert "exit 6: nothing failed, but 2 case(s) could not be judged" in exit_6
    assert exit_6.count("fp8-512x512@6") == 2 and exit_6.count("fa3-512x512@6") == 1 and "| fa3 |" not in exit_6
    assert f"decide fp8-512x512@6 on this machine with" in exit_6 and f"--undecided-from {tmp_path}" in exit_6, \
        "the A/B decides the undecided latency case; a stack that could not run is not offered to it"
    assert "INCONCLUSIVE t.py::test[bf16-512x512@6]: Inconclusive: own reason" in exit_6
    failed = section([])  # something failed: no exit-6 list, the summary names each case
    assert failed.count("fp8-512x512@6") == 1 and "## Not judged" in failed and "| fa3 |" in failed


def test_a_disturbed_tests_own_line_says_disturbed(tmp_path):
    """A test that raised Disturbed on something the summary does not name keeps its own line in the
    flux-perf section under its outcome's name, as the count line does ("1 disturbed")."""
    from flux_perf.plugin.finish import section_lines

    results = read_results(make_results(tmp_path / "results.json", {"bf16-512x512@6": [0.4] * 8}))
    results.records[0].latency = LatencyRecord("pass")
    flux = SimpleNamespace(results=lambda: results, unrecorded=None, baseline_updates=[],
                           config=SimpleNamespace(enforce_targets=False))
    own = [SimpleNamespace(nodeid="t.py::test_own", longrepr=("t.py", 1, "Disturbed: a hot card"),
                           flux_inconclusive="t.py::test_own", flux_outcome=outcome)
           for outcome in ("disturbed", "inconclusive")]
    lines = [line for line, _ in section_lines(flux, SimpleNamespace(stash={}), {"results": tmp_path}, own, [])]
    assert lines[:2] == ["DISTURBED t.py::test_own: Disturbed: a hot card",
                         "INCONCLUSIVE t.py::test_own: Disturbed: a hot card"]


def test_missing_baseline_fails_the_run(store, here):
    result = here(*gpu_suite(store, "--flux-stacks", "bf16"))
    assert result.returncode == 1 and "NO REFERENCES: no references for cpu-" in result.stdout
    assert ") is not judged: no recorded latency" in result.stdout and "no bf16 baseline image" in result.stdout


def test_unknown_stack_is_a_usage_error(here):
    result = here("-m", "h100", "--flux-stacks", "bf16,warp-drive")
    assert result.returncode == 4
    assert "unknown stack or component 'warp-drive'" in result.stderr and "named stacks: bf16" in result.stderr


def test_bad_scenario_is_a_usage_error(here):
    result = here("-m", "h100", "--flux-scenarios", "500x512@6")
    assert result.returncode == 4 and "height=500 is not a multiple of 16" in result.stderr


def test_gpu_tests_skip_with_a_reason_unless_selected(here):
    result = here("tests/h100/test_latency.py", "-rs", "-q")
    assert result.returncode == 0
    assert "GPU suite: selected only with `pytest -m h100`" in result.stdout


def test_a_gpu_run_without_a_gpu_fails_and_says_why(store, here):
    args = ("-m", "h100", "tests/h100/test_latency.py", "-rs", "-q", "--flux-stacks", "bf16",
            "--flux-scenarios", "64x64@2", f"--flux-baselines-dir={store / 'baselines'}",
            f"--flux-report-dir={store / 'report'}")
    result = here(*args)
    assert result.returncode == 1, "a required check that measured nothing must not pass"
    assert "no CUDA GPU visible" in result.stdout and "ran no GPU case" in result.stdout
    # Every case is skipped, none fails: no call to record references with a command that could not.
    assert "NO REFERENCES" not in result.stdout and "every case fails" not in result.stdout
    skipped = json.loads((store / "report" / "results.json").read_text())["skipped"]
    assert [s["stack"] for s in skipped] == ["bf16"] and "no CUDA GPU visible" in skipped[0]["reason"]
    allowed = here(*args, "--flux-allow-no-gpu")
    assert allowed.returncode == 0 and "no CUDA GPU visible" in allowed.stdout


@pytest.mark.parametrize("options, message", [
    (("--flux-scenarios", ","), "no scenario in ','"),
    (("--flux-stacks", ","), "no stack in ','"),
    (("--flux-stacks", ""), "no stack in ''"),  # an unset "$STACKS": never every default stack
    (("--flux-stacks", "bf16,bf16"), "stack 'bf16' is named twice"),
    (("--flux-device", "bogus"), "device 'bogus' is not supported"),
    (("--flux-inject-slowdown", "-1"), "inject-slowdown -1.0: must be a fraction"),
    (("--flux-max-rounds", "0"), "rounds=8, max_rounds=0: need 1 <= rounds <= max_rounds"),  # was raised silently
    (("--flux-rounds", "0"), "rounds=0, max_rounds=32: need 1 <= rounds"),
    (("--flux-allow-no-gpu", "--flux-strict"), "--flux-allow-no-gpu passes a run that judged nothing, --flux-strict"),
    (("--flux-report-dir", "/etc/hostname"), "/etc/hostname exists and is not a folder"),
    (("--flux-update-baselines", "--flux-inject-slowdown", "0.03"), "refusing to record references with an injected"),
    (("--flux-plant", "warp-drive"), "unknown stack or component 'warp-drive'"),
    (("--flux-update-baselines", "--flux-plant", "noise:0.01"), "refusing to record references with planted"),
    (("--flux-telemetry-interval", "0"), "--flux-telemetry-interval: '0' is not a positive number of seconds"),
    (("--flux-telemetry-interval=-1",), "--flux-telemetry-interval: '-1' is not a positive number of seconds"),
    (("--flux-telemetry-interval", "abc"), "--flux-telemetry-interval: 'abc' is not a positive number of seconds"),
    (("--flux-telemetry-interval", "nan"), "--flux-telemetry-interval: 'nan' is not a positive number of seconds"),
    (("--flux-scripted-clock", "inf"), "scripted clock inf: a positive finite number of seconds"),  # a traceback a case
    (("--flux-scripted-clock", "1", "--flux-inject-slowdown", "0.5"), "inject-slowdown 0.5 with a scripted clock"),
    # An unset "$VAR": the report folder crashed the run after measuring, the others fell back to their defaults.
    (("--flux-report-dir=",), "--flux-report-dir: '' names nothing"),
    (("--flux-baselines-dir", ""), "--flux-baselines-dir: '' names nothing"),
    (("--flux-model", ""), "--flux-model: '' names nothing"),
    (("--flux-profile", ""), "--flux-profile: '' names nothing"),
    (("--flux-compile-cache", " "), "--flux-compile-cache: ' ' names nothing"),
])
def test_bad_options_are_one_usage_error_before_measuring(store, options, message, here):
    result = here("-m", "h100", "tests/h100", "--flux-device", "cpu", "--flux-model", "tiny",
                        f"--flux-baselines-dir={store / 'baselines'}", *options)
    assert result.returncode == 4 and message in result.stderr, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("options, seconds", [((), 0.05), (("--flux-telemetry-interval", "0.5"), 0.5),
                                               (("--flux-telemetry-interval=1e3",), 1000.0)])
def test_the_telemetry_interval_reaches_the_measure_settings(tmp_path, capsys, monkeypatch, options, seconds):
    """pytest parses the option and the run's MeasureSettings carry it to the NVML sampler."""
    from flux_perf.plugin import flux_suite_config

    seen = []

    class Probe:
        @pytest.hookimpl(trylast=True)
        def pytest_configure(self, config):
            seen.append(flux_suite_config(config).measure.telemetry_interval_s)

    monkeypatch.chdir(ROOT)
    pytest.main(["-p", "no:cacheprovider", "--co", "-q", f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"),
                 "--flux-device", "cpu", *options, str(tmp_path)], plugins=[Probe()])
    capsys.readouterr()
    assert seen == [seconds]


def test_updates_refused_under_ci_before_measuring(store):
    result = run_pytest(*gpu_suite(store, "--flux-stacks", "bf16", "--flux-update-baselines"), env_extra={"CI": "1"})
    assert result.returncode == 4 and "refusing to rewrite baselines under CI=1" in result.stderr
    assert "[flux-perf] building" not in result.stdout


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "latency.json").write_text('{"flux_perf_store": 2, "entries": {},}'),
     "latency.json is not valid JSON: line 1 column 38"),
    (lambda folder: folder.rmdir() or folder.parent.rmdir() or folder.parent.write_text(""), "exists and is not a folder: nothing was measured"),
])
def test_an_update_into_a_broken_or_unwritable_store_stops_before_measuring(store, here, tiny_source, damage,
                                                                             message):
    """Issue 29: a corrupt table lost its other entries, a read-only folder failed after measuring."""
    from flux_perf.instrument.machine import Machine

    machine = Machine.detect("cpu", tiny_source)
    folder = store / "baselines" / machine.slug / machine.fingerprint
    folder.mkdir(parents=True)
    damage(folder)
    result = here(*gpu_suite(store, "--flux-stacks", "bf16", "--flux-update-baselines"))
    assert result.returncode == 4 and message in result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
    assert "[flux-perf] building" not in result.stdout and ".tmp-" not in result.stderr


def test_a_bad_budgets_file_is_one_usage_error(store, here):
    (store / "baselines" / "budgets.toml").write_text("[fidelity.ssim]\nbf61 = 0.99\n")
    result = here(*gpu_suite(store, "--flux-stacks", "bf16"))
    assert result.returncode == 4 and "unknown stack or component 'bf61'" in result.stderr


def test_the_plugin_stays_out_of_other_projects(tmp_path):
    """Installed flux-perf registers its plugin in every pytest run of the environment: in an
    unrelated project it must neither import torch nor change the environment."""
    (tmp_path / "test_other.py").write_text(
        "import os, sys\n"
        "def test_untouched():\n"
        "    assert 'torch' not in sys.modules, 'flux-perf imported torch'\n"
        "    for name in ('PYTORCH_CUDA_ALLOC_CONF', 'CUDA_MODULE_LOADING'):\n"
        "        assert name not in os.environ, name\n")
    env = {name: "" for name in ("PYTORCH_CUDA_ALLOC_CONF", "CUDA_MODULE_LOADING")}
    clean = {k: v for k, v in os.environ.items() if k not in env}
    result = run_pytest("-q", "-p", "flux_perf.plugin", str(tmp_path), cwd=tmp_path, env_extra=None, environ=clean)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "flux-perf" in run_pytest("--help", cwd=tmp_path, environ=clean).stdout, "the plugin was loaded"


def test_collect_only_is_not_a_run_that_lost_its_gpu(store, here):
    result = here(*gpu_suite(store, "--flux-stacks", "bf16"), "--collect-only", "-q")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "ran no GPU case" not in result.stdout and "test_latency_budget[bf16-64x64@2]" in result.stdout


def test_a_gpu_check_outside_the_cases_that_passed_counts_as_gpu_work(tmp_path):
    """`pytest -m h100 tests/h100/test_attention_kernels_gpu.py` measures kernels, not cases: when
    its tests pass they ran on the GPU, and the run must not fail for "no GPU case"; when they
    all skip, it still fails."""
    checks = tmp_path / "test_checks.py"
    checks.write_text("import pytest\n\n@pytest.mark.h100\ndef test_kernel():\n    assert True\n")
    options = (f"--flux-report-dir={tmp_path / 'r'}", f"--flux-baselines-dir={ROOT / 'baselines'}", "-q")
    ran = run_pytest("-m", "h100", str(checks), *options, cwd=tmp_path)
    assert ran.returncode == 0 and "ran no GPU case" not in ran.stdout, ran.stdout
    checks.write_text("import pytest\n\n@pytest.mark.h100\ndef test_kernel():\n    pytest.skip('no Hopper GPU')\n")
    skipped = run_pytest("-m", "h100", str(checks), *options, cwd=tmp_path)
    assert skipped.returncode == 1 and "ran no GPU case" in skipped.stdout, skipped.stdout


def test_an_inconclusive_gpu_test_outside_the_cases_is_named_by_its_nodeid(tmp_path):
    """A project's own GPU test raising Inconclusive has no flux case: it still counts as
    inconclusive, and the report says what it is about by name (its nodeid), as a case's says its case."""
    (tmp_path / "test_own.py").write_text(
        "import pytest\nfrom flux_perf.plugin import Inconclusive\n\n"
        "@pytest.mark.h100\ndef test_undecided():\n    raise Inconclusive('own reason')\n")
    # What a reader of the outcome sees: the terminal's inconclusive reports and what each names.
    (tmp_path / "conftest.py").write_text(
        "def pytest_terminal_summary(terminalreporter):\n"
        "    for report in terminalreporter.stats.get('inconclusive', []):\n"
        "        terminalreporter.write_line(f'names {report.flux_inconclusive!r}')\n")
    result = run_pytest("-m", "h100", "test_own.py", f"--flux-report-dir={tmp_path / 'r'}",
                        f"--flux-baselines-dir={ROOT / 'baselines'}", "--flux-allow-no-gpu", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 inconclusive" in result.stdout.strip().splitlines()[-1], result.stdout[-2000:]
    assert "names 'test_own.py::test_undecided'" in result.stdout, result.stdout[-2000:]


def test_a_conftest_adds_a_component_through_the_hook(tmp_path, capsys, monkeypatch):
    """A user's component joins --flux-stacks without editing the package, and leaves with the run."""
    from flux_perf.components import REGISTRY, Component

    class Sharpen(Component, register=False):
        name = "my-sharpen"
        summary = "a user's component"

    class UserPlugin:
        @staticmethod
        def pytest_flux_perf_components():
            return [Sharpen]

    monkeypatch.chdir(ROOT)
    code = pytest.main(["-p", "no:cacheprovider", "-q", "--co", "-m", "h100", "tests/h100/test_latency.py",
                        "--flux-device", "cpu", "--flux-model", "tiny", "--flux-stacks", "bf16+my-sharpen",
                        "--flux-scenarios", "64x64@2"], plugins=[UserPlugin()])
    out = capsys.readouterr().out
    assert code == 0 and "test_latency_budget[bf16+my-sharpen-64x64@2]" in out, out[-2000:]
    assert "my-sharpen" not in REGISTRY, "removed when the run ends"
