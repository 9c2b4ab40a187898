"""The `flux-perf` command line, run as users run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import copy_budgets

ROOT = Path(__file__).resolve().parent.parent


def flux_perf(*args, env_extra=None):
    env = {**os.environ, "CI": "", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "flux_perf", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)


def test_run_prints_the_stage_table(tmp_path):
    result = flux_perf("run", "--device", "cpu", "--resolution", "64", "--steps", "2", "--rounds", "2",
                       "--report-dir", str(tmp_path / "report"), "--save-image", str(tmp_path / "{scenario}.png"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "model: tiny (chosen by default" in out
    for row in ("reference encode", "step 1", "step 2", "decode", "total (device)", "wall (end to end)"):
        assert row in out
    assert "same image in every round (same seed): yes" in out
    assert (tmp_path / "64x64@2.png").exists()
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["records"][0]["rounds"] == 2
    assert "PYTORCH_CUDA_ALLOC_CONF" in {entry["name"] for entry in results["environment"]}


@pytest.mark.parametrize("args, message", [
    (("run", "--device", "cpu", "--resolution", "500", "--steps", "2"), "height=500 is not a multiple of 16"),
    (("run", "--device", "cpu", "--resolution", "64", "--steps", "0"), "steps=0"),
    (("run", "--device", "cpu", "--stack", "fp9"), "unknown stack or component 'fp9'"),
    (("run", "--device", "cuda", "--resolution", "64", "--steps", "1"), "no CUDA GPU is visible"),
    (("run", "--device", "cpu", "--model", "no/such/dir/x"), "unknown model"),
])
def test_bad_input_is_one_clear_line(args, message):
    result = flux_perf(*args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_stack_that_cannot_run_here(tmp_path):
    result = flux_perf("run", "--device", "cpu", "--stack", "fp8", "--resolution", "64", "--steps", "1")
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stderr


def test_stacks_lists_what_runs_here():
    result = flux_perf("stacks", "--device", "cpu")
    assert result.returncode == 0
    assert "fast" in result.stdout and "skip: attn-cudnn needs a CUDA GPU" in result.stdout
    assert "attention-slicing" in result.stdout and "set_attention_slice" in result.stdout


def test_baselines_update_refused_under_ci(tmp_path):
    result = flux_perf("baselines", "update", "--device", "cpu", "--baselines-dir", str(tmp_path),
                       env_extra={"CI": "true"})
    assert result.returncode == 2 and "refusing to rewrite baselines under CI=true" in result.stderr


def test_baselines_update_and_show(tmp_path):
    copy_budgets(tmp_path)
    update = flux_perf("baselines", "update", "--device", "cpu", "--scenarios", "64x64@2", "--rounds", "2",
                       "--baselines-dir", str(tmp_path), "--report-dir", str(tmp_path / "report"))
    assert update.returncode == 0, update.stderr[-2000:]
    assert "new baseline" in update.stdout
    show = flux_perf("baselines", "show", "--baselines-dir", str(tmp_path))
    assert "64x64@2.json" in show.stdout and "bf16 median" in show.stdout


def _results(path: Path, samples: dict) -> Path:
    path.write_text(json.dumps({"records": [{"id": k, "wall_samples_s": v} for k, v in samples.items()]}))
    return path


def test_compare_exit_codes(tmp_path):
    base = _results(tmp_path / "base.json", {"bf16-512x512@6": [0.65, 0.651, 0.649, 0.652, 0.650]})
    same = _results(tmp_path / "same.json", {"bf16-512x512@6": [0.651, 0.650, 0.652, 0.649, 0.650]})
    slower = _results(tmp_path / "slow.json", {"bf16-512x512@6": [0.70, 0.701, 0.699, 0.702, 0.700]})
    ok = flux_perf("compare", str(base), str(same))
    assert ok.returncode == 0 and "same" in ok.stdout
    bad = flux_perf("compare", str(base), str(slower))
    assert bad.returncode == 1 and "slower" in bad.stdout and "+7.7%" in bad.stdout
    broken = flux_perf("compare", str(base), str(tmp_path / "missing.json"))
    assert broken.returncode == 2 and "no such file" in broken.stderr


def test_table_merges_committed_runs():
    result = flux_perf("table", "docs/results/run1.json", "--stacks", "bf16,fast")
    assert result.returncode == 0
    assert "| 1024x1024@8 | fast |" in result.stdout and "| 512x512@6 | bf16 |" in result.stdout


def test_table_filters_scenarios_and_lists_what_could_not_run():
    result = flux_perf("table", "docs/results/run1.json", "docs/results/components-skipped.json",
                       "--scenarios", "1024x1024@8")
    assert result.returncode == 0
    assert "| 1024x1024@8 | bf16 |" in result.stdout and "| 512x512@6 |" not in result.stdout
    assert ("| 1024x1024@8 | fp8-te | fp8-te | fp8-te needs the Python package(s) transformer_engine, not installed "
            "here | components-skipped |") in result.stdout
    missing = flux_perf("table", "docs/results/run1.json", "docs/results/no-such-run.json")
    assert missing.returncode == 2 and "docs/results/no-such-run.json: no such file" in missing.stderr
    as_json = json.loads(flux_perf("table", "docs/results/run1.json", "--stacks", "bf16", "--json").stdout)
    rows = {row["scenario"]: row for row in as_json["rows"]}
    assert rows["1024x1024@8"]["speedup_vs_bf16"] == 1.0 and rows["1024x1024@8"]["latency_s"] > 1.0
