"""A whole measuring session on the tiny model: baselines made on purpose, gates, the planted
fidelity regression with its side-by-side picture, an OOM that does not end the session,
and the report built from the run's real figures."""

import json
from pathlib import Path

import pytest
import torch
from helpers import copy_budgets

from flux_perf.components import REGISTRY
from flux_perf.components.base import Component
from flux_perf.config import SuiteConfig
from flux_perf.measure import MeasureSettings
from flux_perf.report import write_report
from flux_perf.scenarios import Scenario
from flux_perf.session import FluxSession
from flux_perf.stacks import parse_stacks
from flux_perf.stats import Verdict

SCENARIO = Scenario(64, 64, 2)


class BrokenDecoder(Component):
    """Test-only planted regression: halves the VAE's output convolution."""

    name = "broken-decoder"
    summary = "test only"
    lossless = True

    def apply(self, pipe):
        with torch.no_grad():
            pipe.vae.decoder.conv_out.weight.mul_(0.5)


class OutOfMemory(Component):
    name = "oom"
    summary = "test only"

    def apply(self, pipe):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.fixture
def session_for(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setitem(REGISTRY, "broken-decoder", BrokenDecoder)
    monkeypatch.setitem(REGISTRY, "oom", OutOfMemory)
    baselines = tmp_path / "baselines"
    copy_budgets(baselines)

    def make(stacks: str, update: bool = False) -> FluxSession:
        config = SuiteConfig(
            model="tiny", device="cpu", stacks=parse_stacks(stacks), scenarios=(SCENARIO,),
            measure=MeasureSettings(rounds=3, max_rounds=6), strict=False, report_dir=tmp_path / "report",
            baselines_dir=baselines, update_baselines=update, force_update=False,
        )
        return FluxSession(config, log=lambda message: None)

    return make


def run_all(session):
    return [session.case(stack, SCENARIO) for stack in session.config.stacks]


def test_update_then_gate_then_catch_the_planted_regression(session_for, tmp_path):
    (bf16,) = run_all(session_for("bf16", update=True))
    assert bf16.fidelity.verdict == "updated" and bf16.error is None
    assert len(list((tmp_path / "baselines").glob("cpu-*/tiny-*/64x64@2.png"))) == 1

    session = session_for("bf16,fused-qkv,broken-decoder")
    good, fused, broken = run_all(session)
    assert good.fidelity.verdict == "pass" and good.fidelity.ssim == pytest.approx(1.0)
    assert good.latency.budget.kind == "relative" and good.latency.verdict in (Verdict.PASS, Verdict.INCONCLUSIVE)
    assert fused.fidelity.verdict == "pass"
    assert broken.fidelity.verdict == "fail" and broken.fidelity.ssim < 0.999
    evidence = Path(broken.fidelity.evidence)
    assert evidence.exists() and evidence.parent == tmp_path / "report" / "fidelity"

    paths = write_report(session, tmp_path / "report")
    payload = json.loads(paths["results"].read_text())
    records = {r["stack"]: r for r in payload["records"]}
    assert records["bf16"]["wall_s"]["median"] > 0 and len(records["bf16"]["wall_samples_s"]) >= 3
    assert records["broken-decoder"]["fidelity"]["verdict"] == "fail"
    assert records["fused-qkv"]["speedup_vs_bf16"] > 0
    summary = paths["summary"].read_text()
    assert "| 64x64@2 | broken-decoder |" in summary and f"{records['bf16']['wall_s']['median']:.3f}" in summary
    assert paths["latency_plot"].stat().st_size > 5_000


def test_missing_baseline_fails_with_the_command(session_for):
    (result,) = run_all(session_for("bf16"))
    assert result.fidelity.verdict == "error" and "--flux-update-baselines" in result.fidelity.message


def test_out_of_memory_is_reported_and_the_session_goes_on(session_for):
    session = session_for("oom,bf16", update=True)
    oom, bf16 = run_all(session)
    assert "out of memory running stack oom" in oom.error and "oom+vae-tiling" in oom.error
    assert bf16.error is None and bf16.timed is not None


def test_update_refused_under_ci(session_for, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (result,) = run_all(session_for("bf16", update=True))
    assert "CI=true" in result.error
