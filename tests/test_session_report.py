"""A whole measuring session on the tiny model: baselines made on purpose, gates, the planted
fidelity regression with its side-by-side picture, an OOM that does not end the session,
and the report built from the run's real figures."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import copy_budgets, quiet_host

from flux_perf.store.baselines import UpdateRefused
from flux_perf.gate.budgets import LatencyBudget
from flux_perf.components import REGISTRY
from flux_perf.components.base import Component
from flux_perf.suite.config import ConfigError, SuiteConfig
from flux_perf.gate.fidelity import FidelityVerdict
from flux_perf.gate.latency import Verdict, describe_disturbance, judge_latency
from flux_perf.instrument.telemetry import Flag
from flux_perf.instrument.measure import MEASUREMENT_VERSION, MeasureSettings
from flux_perf.report.records import read_results
from flux_perf.report.summary import write_report
from flux_perf.model.scenarios import Scenario
from flux_perf.suite.session import FluxSession
from flux_perf.components.stacks import parse_stacks

SCENARIO = Scenario(64, 64, 2)


class BrokenDecoder(Component, register=False):
    """Test-only planted regression: halves the VAE's output convolution."""

    name = "broken-decoder"
    summary = "test only"
    lossless = True

    def apply(self, pipe):
        with torch.no_grad():
            pipe.vae.decoder.conv_out.weight.mul_(0.5)


class OutOfMemory(Component, register=False):
    name = "oom"
    summary = "test only"

    def apply(self, pipe):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class ExitsTheProcess(Component, register=False):
    name = "calls-exit"
    summary = "test only"

    def apply(self, pipe):
        raise SystemExit(3)  # a library calling sys.exit() while the stack is built


@pytest.fixture
def session_for(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setitem(REGISTRY, "broken-decoder", BrokenDecoder)
    monkeypatch.setitem(REGISTRY, "oom", OutOfMemory)
    monkeypatch.setitem(REGISTRY, "calls-exit", ExitsTheProcess)
    baselines = tmp_path / "baselines"
    copy_budgets(baselines)
    quiet_host(monkeypatch)  # updates refuse rounds timed under CPU contention (the test below)

    def make(stacks: str, update: bool = False, **settings) -> FluxSession:
        config = SuiteConfig(
            model="tiny", device="cpu", stacks=parse_stacks(stacks), scenarios=(SCENARIO,),
            measure=MeasureSettings(rounds=3, max_rounds=6), strict=False, report_dir=tmp_path / "report",
            baselines_dir=baselines, update_baselines=update, force_update=False, **settings,
        )
        return FluxSession(config, log=lambda message: None)

    return make


def run_all(session):
    return [session.case(stack, SCENARIO) for stack in session.config.stacks]


def test_update_then_gate_then_catch_the_planted_regression(session_for, tmp_path):
    (bf16,) = run_all(session_for("bf16", update=True))
    assert bf16.fidelity.verdict is FidelityVerdict.UPDATED and bf16.error is None
    assert bf16.latency.verdict is Verdict.RECORDED
    assert len(list((tmp_path / "baselines").glob("cpu-*/tiny-*/64x64@2.png"))) == 1

    session = session_for("bf16,fused-qkv,broken-decoder")
    good, fused, broken = run_all(session)
    # No calibration in this store: within the floor, judged by it alone.
    assert good.fidelity.verdict is FidelityVerdict.GAP and good.fidelity.ssim == pytest.approx(1.0)
    # Never a regression; on a busy CI machine a slow round is honestly `disturbed` (seen beside a
    # multi-core compression job), which is not a failure either.
    assert good.latency.budget.kind == "relative" and not good.latency.failed
    assert good.latency.verdict in (Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.DISTURBED)
    assert fused.latency.verdict is Verdict.NO_REFERENCE and fused.latency.failed, "recorded for bf16 only"
    assert "--stacks fused-qkv --scenarios 64x64@2" in fused.latency.missing
    assert fused.fidelity.verdict is FidelityVerdict.GAP and fused.fidelity.gap, "no calibration: the floor alone"
    assert broken.fidelity.verdict is FidelityVerdict.FAIL and broken.fidelity.ssim < 0.999
    evidence = Path(broken.fidelity.evidence)
    assert evidence.exists() and evidence.parent == tmp_path / "report" / "fidelity"

    paths = write_report(session.results(), tmp_path / "report")
    payload = json.loads(paths["results"].read_text())
    records = {r["stack"]: r for r in payload["records"]}
    assert records["bf16"]["wall_s"]["median"] > 0 and len(records["bf16"]["wall_samples_s"]) >= 3
    assert records["broken-decoder"]["fidelity"]["verdict"] == "fail"
    summary = paths["summary"].read_text()
    assert "| 64x64@2 | broken-decoder |" in summary and f"{records['bf16']['wall_s']['median']:.3f}" in summary
    assert "## Not judged (never a pass)" in summary and "- fused-qkv-64x64@2: NO-REFERENCE: " in summary
    assert "## Fidelity gaps" in summary
    assert session.results().records == list(session.records.values()), "writing the report changes no record"
    assert read_results(paths["results"]).records == session.results().records, "read back as they were written"
    assert records["fused-qkv"]["latency"] == fused.latency.to_dict(), "the judge's verdict, as it wrote it"
    assert records["broken-decoder"]["fidelity"] == broken.fidelity.to_dict()
    assert paths["latency_plot"].stat().st_size > 5_000


def test_a_fidelity_failure_computes_ssim_once_for_the_verdict_and_its_picture(session_for, monkeypatch):
    import skimage.metrics

    (bf16,) = run_all(session_for("bf16", update=True))
    assert bf16.error is None, bf16.error
    ssim, calls = skimage.metrics.structural_similarity, []
    monkeypatch.setattr(skimage.metrics, "structural_similarity", lambda *a, **k: calls.append(1) or ssim(*a, **k))
    (broken,) = run_all(session_for("broken-decoder"))
    assert broken.fidelity.verdict is FidelityVerdict.FAIL and Path(broken.fidelity.evidence).exists()
    assert len(calls) == 1, "the side-by-side is drawn from the comparison the judge made"
    assert broken.fidelity.comparison is None and "comparison" not in broken.fidelity.to_dict()


def test_a_lossy_stacks_update_computes_ssim_once_for_the_record_and_the_verdict(session_for, monkeypatch):
    """The update measures the stack's fidelity against the bf16 baseline; the judge that follows
    is handed that comparison instead of making it again."""
    import skimage.metrics

    (bf16,) = run_all(session_for("bf16", update=True))
    assert bf16.error is None, bf16.error
    ssim, calls = skimage.metrics.structural_similarity, []
    monkeypatch.setattr(skimage.metrics, "structural_similarity", lambda *a, **k: calls.append(1) or ssim(*a, **k))
    session = session_for("steps:1", update=True)
    assert not session.config.stacks[0].lossless
    (lossy,) = run_all(session)
    assert lossy.error is None, lossy.error
    assert len(calls) == 1, "the judge reuses the comparison the update recorded"
    recorded = session.references(session.config.stacks[0], SCENARIO, session.provenance(session.config.stacks[0]))
    assert recorded.fidelity.ssim == lossy.fidelity.ssim < 1.0  # one measurement, recorded and judged


def test_recording_the_bf16_baseline_compares_it_once_not_with_itself(session_for, monkeypatch):
    import skimage.metrics

    ssim, calls = skimage.metrics.structural_similarity, []
    monkeypatch.setattr(skimage.metrics, "structural_similarity", lambda *a, **k: calls.append(1) or ssim(*a, **k))
    (bf16,) = run_all(session_for("bf16", update=True))
    assert bf16.error is None, bf16.error
    assert calls == [], "bf16 becomes the baseline: nothing to compare it with (it was compared with itself)"
    stored = json.loads((Path(bf16.fidelity.baseline).parent / "fidelity.json").read_text())
    recorded = stored["entries"]["64x64@2"]["bf16"]
    assert recorded["ssim"] == 1.0 and recorded["latent_rel_l2"] == 0.0 and recorded["psnr"] is None, recorded


def test_a_machine_with_nothing_recorded_fails_every_case_with_the_bootstrap_command(session_for, tmp_path):
    """The bootstrap records this run's own stacks and scenarios where this run looks: a bare
    `flux-perf baselines update` recorded the guide's four scenarios into the checkout's baselines/."""
    session = session_for("bf16")
    bootstrap = (f"flux-perf baselines update --stacks bf16 --scenarios 64x64@2 --model tiny --device cpu "
                 f"--baselines-dir {tmp_path / 'baselines'}")
    assert session.unrecorded and session.unrecorded.endswith(f"with: {bootstrap}")
    assert "every case fails until they are recorded" in session.unrecorded
    (result,) = run_all(session)
    assert result.latency.verdict is Verdict.NO_REFERENCE and result.latency.failed
    assert f"record it with `{bootstrap}`" in result.latency.missing
    assert result.fidelity.verdict is FidelityVerdict.ERROR and "flux-perf baselines update" in result.fidelity.message


def test_out_of_memory_is_reported_and_the_session_goes_on(session_for):
    session = session_for("oom,bf16", update=True)
    oom, bf16 = run_all(session)
    assert "out of memory running stack oom" in oom.error and "oom+vae-tiling" in oom.error
    assert bf16.error is None and bf16.timed is not None


def test_sys_exit_in_one_stack_fails_that_case_and_the_run_goes_on_unmarked(session_for):
    session = session_for("calls-exit,bf16", update=True)
    exits, bf16 = run_all(session)
    assert exits.error == "SystemExit: the code called sys.exit(3)" and bf16.error is None
    assert session.interrupted is None, "the run was not cut short: no 'interrupted' mark in results.json"


def test_update_refused_under_ci_before_measuring(session_for, monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(UpdateRefused, match="CI=1"):
        session_for("bf16", update=True)


def test_update_refused_with_an_injected_slowdown(session_for):
    with pytest.raises(ConfigError, match="refusing to record references with an injected slow-down"):
        session_for("bf16", update=True, inject_slowdown=0.03)


def test_an_update_on_a_disturbed_machine_records_nothing(session_for, monkeypatch, tmp_path):
    """Issue 29: an update under CPU contention (91 % of the rounds stalled) recorded its slow
    rounds. Rounds still disturbed after measuring again (another process on the GPU, a thermal or
    hardware slow-down, CPU contention) are refused, as an injected slow-down is."""
    quiet_host(monkeypatch, stall=0.91)
    session = session_for("bf16", update=True)
    (result,) = run_all(session)
    assert result.error.startswith("refusing to record references from disturbed rounds (host CPU contention: "
                                   "runnable tasks waited for a CPU 91% of the timed rounds")
    assert result.latency.verdict is Verdict.DISTURBED and result.latency.disturbance and result.timed.attempts == 2
    assert not list((tmp_path / "baselines").rglob("*.json")) and not session.baseline_updates
    assert not list((tmp_path / "baselines").rglob("*.png")), "no baseline image either"


def test_an_update_on_a_host_whose_hypervisor_stole_cpu_time_records_nothing(session_for, monkeypatch, tmp_path):
    """PSI does not see CPU time a hypervisor gives to other guests (an H100 of the pool ran a
    host-bound case 50 % slow with PSI at 0.03 %): /proc/stat's steal share disturbs the rounds as
    contention does, is said in words and kept in results.json."""
    from flux_perf.report.records import write_results

    quiet_host(monkeypatch, steal=0.14)
    session = session_for("bf16", update=True)
    (result,) = run_all(session)
    assert result.error.startswith("refusing to record references from disturbed rounds (host CPU steal: the "
                                   "hypervisor took 14% of the CPU time of the timed rounds (/proc/stat)")
    assert result.latency.verdict is Verdict.DISTURBED and result.timed.attempts == 2
    assert not list((tmp_path / "baselines").rglob("*.json")) and not session.baseline_updates
    (record,) = read_results(write_results(session.results(), tmp_path / "results.json")).records
    assert record.host_cpu_steal == 0.14 and record.host_cpu_stall == 0.0 and record.flags == ["cpu-steal"]
    # Beside the host's figures, the launching thread's own (instrument/host.ThreadClock).
    assert 0 < record.host_thread_busy <= 1 and record.host_thread_switches >= 0


def test_under_torchrun_the_warm_up_weighed_against_the_rounds_is_the_slowest_ranks(session_for, monkeypatch,
                                                                                      tmp_path):
    """The rounds judged are the per-round maximum over ranks. A rank 20 % slower than rank 0 in its
    warm-up and its rounds alike (the code, on that rank) must fail, as it would in one process:
    weighed against rank 0's own warm-up it read as the machine changing under the case
    (DISTURBED), and each rank judged against its own warm-up, so ranks could disagree."""
    copy_budgets(tmp_path / "baselines", 0.03)  # the rounds are scripted: the real tolerance
    (recorded,) = run_all(session_for("bf16", update=True, scripted_clock=1.0))
    assert recorded.latency.verdict is Verdict.RECORDED
    # Rank 1, every call 1.2x rank 0's: what all_gather's per-round maximum gives back.
    monkeypatch.setattr("flux_perf.instrument.distributed.slowest_rounds", lambda walls: [1.2 * w for w in walls])
    (result,) = run_all(session_for("bf16", scripted_clock=1.0))
    assert max(result.timed.warmup_wall_s[-2:]) < 1.03, "rank 0's own warm-up ran within the budget"
    assert result.latency.verdict is Verdict.FAIL and result.latency.failed, result.latency.disturbance


def plant_baseline_latents(session, latents: np.ndarray) -> Path:
    """Replace the recorded bf16 latents with `latents`, their hash updated: a file the store accepts."""
    path = session.store.latents_path(session.key(SCENARIO))
    data = io.BytesIO()
    np.save(data, latents)
    path.write_bytes(data.getvalue())
    meta = session.store.paths(session.key(SCENARIO))[1]
    meta.write_text(json.dumps({**json.loads(meta.read_text()),
                                "latents_sha256": hashlib.sha256(data.getvalue()).hexdigest()}))
    return path


@pytest.mark.parametrize("latents", [np.full((1, 4, 4), np.nan, np.float32), np.ones((1, 3, 5), np.float32)],
                         ids=["nan", "wrong-shape"])
def test_bad_recorded_latents_fail_only_the_fidelity_judgement(session_for, latents):
    """Issue 29: latents whose hash matched but held NaN or another shape gave a bare ValueError that
    failed the latency test too."""
    run_all(session_for("bf16", update=True))
    session = session_for("bf16")
    path = plant_baseline_latents(session, latents)
    (result,) = run_all(session)
    assert result.error is None and result.latency.verdict is not Verdict.NO_REFERENCE
    assert result.latency.budget.kind == "relative", "the latency is judged against its reference as ever"
    assert result.fidelity.verdict is FidelityVerdict.ERROR and result.fidelity.message.startswith(f"latents {path} ")
    assert "flux-perf baselines update" in result.fidelity.message


def test_an_update_against_bf16_latents_of_another_shape_records_nothing_and_names_the_fix(session_for):
    """A lossy stack's fidelity measured against bf16 latents of another shape was recorded from the
    image alone, an entry the judge then refused at every gate run: the update refuses instead."""
    run_all(session_for("bf16", update=True))
    probe = session_for("bf16")
    folder = probe.store.folder(probe.key(SCENARIO))
    plant_baseline_latents(probe, np.ones((1, 3, 5), np.float32))
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    session = session_for("guidance:3.0", update=True)
    (lossy,) = run_all(session)
    shape = tuple(lossy.timed.latents.shape)
    assert lossy.error.startswith("refusing to record guidance:3.0 at 64x64@2: the latents of the bf16 baseline "), \
        lossy.error
    assert f"are (1, 3, 5), this run's final latents {shape}" in lossy.error
    assert "re-record bf16 first with `flux-perf baselines update --stacks bf16 --scenarios 64x64@2 --model tiny " \
           f"--device cpu --baselines-dir {folder.parents[1]}`, then this stack with `flux-perf baselines update " \
           "--stacks guidance:3.0 " in lossy.error
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before and not session.baseline_updates
    assert lossy.latency is None, "never `recorded`: nothing was"
    assert lossy.fidelity.verdict is FidelityVerdict.ERROR, "the gate's judgement of the same references"
    # The commands it names fix it: the fidelity is recorded with its latent distance, and judged.
    run_all(session_for("bf16", update=True))
    (lossy,) = run_all(session_for("guidance:3.0", update=True))
    assert lossy.error is None, lossy.error
    recorded = json.loads((folder / "fidelity.json").read_text())["entries"]["64x64@2"]["guidance:3.0"]
    assert recorded["latent_rel_l2"] is not None, recorded
    (gated,) = run_all(session_for("guidance:3.0"))
    assert gated.fidelity.verdict is not FidelityVerdict.ERROR and gated.fidelity.latent_rel_l2 is not None


def test_update_refreshes_every_stack_and_marks_old_references_stale(session_for, tmp_path):
    run_all(session_for("bf16,fused-qkv", update=True))
    path = next((tmp_path / "baselines").glob("cpu-*/tiny-*/latency.json"))
    table = json.loads(path.read_text())
    assert set(table["entries"]["64x64@2"]) == {"bf16", "fused-qkv"}
    entry = table["entries"]["64x64@2"]["fused-qkv"]
    provenance = entry["provenance"]
    assert entry["measurement_version"] == MEASUREMENT_VERSION and provenance["software"]["torch"]
    assert provenance["source"] and set(provenance["components"]) == {"fused-qkv", "fused-qkv (helpers)"}
    entry["measurement_version"] = 1
    provenance["software"]["torch"] = "1.0.0"
    path.write_text(json.dumps(table))
    (fused,) = run_all(session_for("fused-qkv"))
    assert any(s.startswith("torch 1.0.0 ->") for s in fused.latency.stale)
    assert "timed by measurement method 1, now" in " ".join(fused.latency.stale)


ROUNDS = {"samples_s": [0.49, 0.5, 0.51], "ci_low_s": 0.49, "ci_high_s": 0.51}


@pytest.mark.parametrize("entry, message", [
    ({"median_s": -1.0}, "median_s=-1.0 is not a positive number"),
    # A median its own rounds or interval contradict: the gate judged the rounds but stated the
    # median ("over budget 5.150 s (recorded 5.000 s + 3%)"), or passed 1e9 as "faster 100.0%".
    ({**ROUNDS, "median_s": 5.0}, "median_s=5.0 is not the median of its samples_s (0.5 over 3 rounds)"),
    ({**ROUNDS, "median_s": 1e9}, "median_s=1000000000.0 is not the median of its samples_s"),
    ({"median_s": 5.0, "samples_s": []}, "samples_s=[] holds no round for median_s=5.0"),
    ({"median_s": 5.0, "ci_low_s": 0.49, "ci_high_s": 0.51}, "ci_high_s=0.51 does not hold median_s=5.0"),
])
def test_a_nonsensical_recorded_latency_is_never_a_reference(session_for, tmp_path, entry, message):
    session = session_for("bf16")
    path = session.store.folder(session.key(SCENARIO)) / "latency.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"flux_perf_store": 2, "entries": {"64x64@2": {"bf16": entry}}}))
    (result,) = run_all(session_for("bf16"))
    assert result.latency.verdict is Verdict.NO_REFERENCE and result.latency.failed
    assert message in result.latency.missing and str(path) in result.latency.missing
    assert "flux-perf baselines update" in result.latency.missing


def test_disturbed_rounds_are_never_a_failure():
    recorded = tuple(1.0 + 0.001 * i for i in range(8))
    budget = LatencyBudget(1.03, "relative", "recorded 1.000 s + 3%", 0.03, recorded, reference_clock_mhz=1980,
                           reference_s=1.0)
    slow = [1.2 + 0.001 * i for i in range(8)]
    assert judge_latency(slow, [budget]).verdict is Verdict.FAIL
    why = describe_disturbance([Flag.OTHER_PROCESSES], [{"pid": 4242, "name": "python3", "used_memory_mib": 30000}],
                               1500, 1980)
    result = judge_latency(slow, [budget], disturbance=why)
    assert result.verdict is Verdict.DISTURBED and not result.failed
    assert "pid 4242 python3 (30000 MiB)" in result.disturbance[0] and "SM clock 1500 MHz" in result.disturbance[1]
    # A fast result on a busy machine is still a pass: the disturbance could only have slowed it.
    assert judge_latency([0.99 + 0.001 * i for i in range(8)], [budget], disturbance=why).verdict is Verdict.PASS


def test_an_interrupted_case_is_recorded_as_such(session_for, monkeypatch):
    session = session_for("bf16", update=True)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(session.runner, "measure", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_all(session)
    (record,) = session.results().records
    assert record.error == "interrupted (KeyboardInterrupt) before this case finished"
    assert session.results().interrupted == record.error


def test_a_named_stack_redefined_since_its_reference_says_so_in_both_gates(session_for, monkeypatch):
    """`fast` gained FP8 attention in issue 17: its old references described other components.
    Both the latency and the fidelity verdict must name what was recorded and what runs now."""
    from flux_perf.components import stacks

    monkeypatch.setitem(stacks.NAMED_STACKS, "mine", ("fused-qkv",))
    run_all(session_for("bf16,mine", update=True))
    (same,) = run_all(session_for("mine"))
    assert not same.latency.stale and not same.fidelity.stale
    monkeypatch.setitem(stacks.NAMED_STACKS, "mine", ("fused-qkv", "tf32"))
    (redefined,) = run_all(session_for("mine"))
    for stale in (redefined.latency.stale, redefined.fidelity.stale):
        assert len(stale) == 1 and "recorded for the components fused-qkv" in stale[0]
        assert "now fused-qkv+tf32" in stale[0] or "now tf32+fused-qkv" in stale[0]
