"""The pytest plugin end to end: the real GPU test files run on the tiny model on the CPU,
in a subprocess, exactly as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import copy_budgets

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(*args, cwd=ROOT, env_extra=None):
    env = {**os.environ, "CI": "", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def store(tmp_path):
    copy_budgets(tmp_path / "baselines")
    return tmp_path


def gpu_suite(store, *extra):
    return ("-m", "h100", "tests/h100", "--flux-device", "cpu", "--flux-model", "tiny",
            "--flux-scenarios", "64x64@2", f"--flux-baselines-dir={store / 'baselines'}",
            f"--flux-report-dir={store / 'report'}", "--flux-rounds", "3", *extra)


def test_gpu_suite_on_cpu_update_then_gate(store):
    first = run_pytest(*gpu_suite(store, "--flux-stacks", "bf16,fused-qkv,cudnn", "--flux-update-baselines"))
    assert first.returncode == 0, first.stdout[-3000:]
    assert "baseline updated: cpu-" in first.stdout and "# flux-perf summary" in first.stdout
    # Progress reaches the terminal past output capture (a passing test's captured output is dropped).
    assert "[flux-perf] building tiny model for stack bf16" in first.stdout
    # A stack this machine cannot run is reported with its reason, not silently dropped.
    first_results = json.loads((store / "report" / "results.json").read_text())
    assert "--flux-stacks bf16,fused-qkv,cudnn" in first_results["command"]
    skipped = first_results["skipped"]
    assert skipped == [{"stack": "cudnn", "components": "attn-cudnn", "scenario": "64x64@2",
                        "reason": "attn-cudnn needs a CUDA GPU (running on cpu)"}]
    assert "| 64x64@2 | cudnn | attn-cudnn | attn-cudnn needs a CUDA GPU" in (store / "report" / "summary.md").read_text()
    second = run_pytest(*gpu_suite(store, "--flux-stacks", "bf16,fused-qkv", "--benchmark-json",
                                   str(store / "bench.json")))
    assert second.returncode == 0, second.stdout[-3000:]
    results = json.loads((store / "report" / "results.json").read_text())
    assert {r["latency"]["budget"]["kind"] for r in results["records"]} == {"relative"}
    bench = json.loads((store / "bench.json").read_text())
    latency = [b for b in bench["benchmarks"] if b["name"].startswith("test_latency_budget")]
    assert len(latency) == 2 and all(b["stats"]["rounds"] >= 3 for b in latency)
    assert latency[0]["extra_info"]["stages_ms"]["denoise"] > 0


def test_missing_baseline_fails_the_run(store):
    result = run_pytest(*gpu_suite(store, "--flux-stacks", "bf16"))
    assert result.returncode == 1 and "no baseline for cpu-" in result.stdout


def test_unknown_stack_is_a_usage_error():
    result = run_pytest("-m", "h100", "--flux-stacks", "bf16,warp-drive")
    assert result.returncode == 4
    assert "unknown stack or component 'warp-drive'" in result.stderr and "named stacks: bf16" in result.stderr


def test_bad_scenario_is_a_usage_error():
    result = run_pytest("-m", "h100", "--flux-scenarios", "500x512@6")
    assert result.returncode == 4 and "height=500 is not a multiple of 16" in result.stderr


def test_gpu_tests_skip_with_a_reason_unless_selected():
    result = run_pytest("tests/h100/test_latency.py", "-rs", "-q")
    assert result.returncode == 0
    assert "GPU suite: selected only with `pytest -m h100`" in result.stdout


def test_gpu_tests_without_a_gpu_say_so(store):
    result = run_pytest("-m", "h100", "tests/h100/test_latency.py", "-rs", "-q", "--flux-stacks", "bf16",
                        "--flux-scenarios", "64x64@2", f"--flux-baselines-dir={store / 'baselines'}",
                        f"--flux-report-dir={store / 'report'}")
    assert result.returncode == 0
    assert "no CUDA GPU visible" in result.stdout
    skipped = json.loads((store / "report" / "results.json").read_text())["skipped"]
    assert [s["stack"] for s in skipped] == ["bf16"] and "no CUDA GPU visible" in skipped[0]["reason"]
