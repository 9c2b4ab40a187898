"""The fidelity gate: the floor as outer bound, the calibrated lossless band, each stack's recorded
fidelity with its tolerance, the gap without a calibration, and the calibrate -> update -> gate
cycle on the tiny model."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, copy_budgets, run_gpu_suite_here

from flux_perf.gate.calibrate import ScenarioCalibration, Variant, band_edges, distances, propose_band, restated, separation
from flux_perf.gate.fidelity import FidelityVerdict, fidelity_tolerance, judge_fidelity
from flux_perf.gate.images import compare_images
from flux_perf.model.scenarios import Scenario
from flux_perf.store.baselines import Baseline, BaselineKey, png_sha256
from flux_perf.store.entries import Band, BaselineError, CalibrationEntry, FidelityEntry, Spread
from flux_perf.store.provenance import Provenance
from flux_perf.store.references import References

RNG = np.random.default_rng(0)
BASE = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
LATENTS = RNG.standard_normal((16, 8, 8)).astype(np.float32)
PROVENANCE = Provenance("2026-12-06", "abc", None, "def")
KEY = BaselineKey("cpu", "tiny-x", "64x64@2")
PASS, FAIL = FidelityVerdict.PASS, FidelityVerdict.FAIL


def _perturbed(scale: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    image = np.clip(BASE.astype(float) + rng.normal(0, 255 * scale, BASE.shape), 0, 255).round().astype(np.uint8)
    return image, LATENTS + scale * rng.standard_normal(LATENTS.shape).astype(np.float32)


def _band_around(scale: float) -> Band:
    image, latents = _perturbed(scale, seed=7)
    measured = compare_images(BASE, image, LATENTS, latents)
    band = propose_band([Variant("kernel", "lossless", [distances(measured)])], 1.5)
    return Band(band["ssim"], band["psnr"], band["latent_rel_l2"])


def _recorded(image, latents, sha=None) -> FidelityEntry:
    measured = compare_images(BASE, image, LATENTS, latents)
    return FidelityEntry(measured.ssim, measured.to_dict()["psnr"], measured.latent_rel_l2,
                         sha or png_sha256(image), "stack", False, PROVENANCE)


def _refs(*, band=None, recorded=None, own=None, spread=None, stack="stack") -> References:
    calibration = None if band is None else CalibrationEntry(band, {stack: spread} if spread else {}, {}, PROVENANCE)
    return References(KEY, stack, Baseline(BASE, LATENTS, PROVENANCE, Path("base.png")), None, recorded, own,
                      calibration)


def _judge(image, latents, *, lossless, floor=0.5, band=None, recorded=None, own=None, spread=None, stack="stack",
           strict=False):
    return judge_fidelity(image, latents, _refs(band=band, recorded=recorded, own=own, spread=spread, stack=stack),
                          floor=floor, floor_source="test floor", lossless=lossless, strict=strict)


def test_a_change_inside_the_lossless_band_passes_and_says_so():
    result = _judge(*_perturbed(0.008), lossless=True, band=_band_around(0.01))
    assert result.verdict is PASS, result.reasons
    assert "output changed within the lossless band; if the change is yours, update the baselines on purpose" in result.message


def test_a_break_outside_the_lossless_band_fails_naming_the_metrics():
    result = _judge(*_perturbed(0.05), lossless=True, band=_band_around(0.01))
    assert result.verdict is FAIL
    assert result.reasons[0].startswith("outside the lossless band: SSIM")
    assert "latent distance" in result.reasons[0] and "PSNR" in result.reasons[0]


def test_a_tighter_hand_floor_yields_to_the_calibrated_band():
    """bf16's 0.9999 floor failed exact kernel changes; with a calibration the band decides."""
    image, latents = _perturbed(0.008)
    assert _judge(image, latents, lossless=True, floor=0.9999).verdict is FAIL  # uncalibrated: the floor
    result = _judge(image, latents, lossless=True, floor=0.9999, band=_band_around(0.01))
    assert result.verdict is PASS and "lossless band" in result.floor_source


def test_a_lossy_stack_fails_when_its_fidelity_moves_beyond_its_tolerance():
    lossy_image, lossy_latents = _perturbed(0.05)
    recorded = _recorded(lossy_image, lossy_latents)
    band = _band_around(0.002)
    assert _judge(lossy_image, lossy_latents, lossless=False, band=band, recorded=recorded).verdict is PASS
    # The same stack broken further (20 % more error): far beyond what a lossless change would add.
    result = _judge(*_perturbed(0.06), lossless=False, band=band, recorded=recorded)
    assert result.verdict is FAIL and result.reasons[0].startswith("fidelity moved beyond its tolerance")


def test_tolerance_is_what_a_lossless_change_on_top_would_add():
    band = Band(0.999, 50.0, 0.003)
    recorded = FidelityEntry(0.99, 40.0, 0.04, None, "x", False, PROVENANCE)
    tolerance = fidelity_tolerance(recorded, band)
    assert tolerance["ssim"] == pytest.approx(0.001)
    assert tolerance["psnr"] == pytest.approx(10 * np.log10(1.1))  # MSEs add: 1e-4 + 1e-5
    assert tolerance["latent_rel_l2"] == pytest.approx(np.hypot(0.04, 0.003) - 0.04)
    spread = fidelity_tolerance(recorded, band, Spread(ssim=0.01))
    assert spread["ssim"] == pytest.approx(0.03), "3x a larger run-to-run spread wins"


def test_uncalibrated_weights_are_a_gap_judged_by_the_floor_and_failed_under_strict():
    result = _judge(*_perturbed(0.05), lossless=False, floor=0.5)
    assert result.verdict is FidelityVerdict.GAP and "no fidelity calibration for 64x64@2" in result.gap
    assert not result.failed
    assert _judge(*_perturbed(0.05), lossless=False, floor=0.5, strict=True).failed, "--flux-strict fails a gap"
    assert _judge(*_perturbed(0.05), lossless=False, floor=0.99).reasons[0].startswith("SSIM")
    no_record = _judge(*_perturbed(0.05), lossless=False, band=_band_around(0.002))
    assert "no recorded fidelity for stack" in no_record.gap


def test_no_baseline_or_a_broken_reference_is_an_error_never_a_pass():
    refs = References(KEY, "stack", problems={"baseline": "no bf16 baseline image for 64x64@2: record it with `x`"})
    result = judge_fidelity(BASE, LATENTS, refs, floor=0.5, floor_source="f", lossless=True)
    assert result.verdict is FidelityVerdict.ERROR and result.failed and "record it with `x`" in result.message
    broken = References(KEY, "stack", Baseline(BASE, LATENTS, PROVENANCE, Path("b")),
                        problems={"calibration": "calibration.json is not valid JSON"})
    assert judge_fidelity(BASE, LATENTS, broken, floor=0.5, floor_source="f", lossless=True).verdict is \
        FidelityVerdict.ERROR


def test_separation_names_the_metric_that_tells_breaks_from_kernels():
    lossless = [Variant("kernel", "lossless", [{"1-ssim": 1e-4, "mse": 1e-6, "latent_rel_l2": 1e-3}])]
    breaks = [Variant("noise", "break", [{"1-ssim": 1.2e-4, "mse": 2e-6, "latent_rel_l2": 5e-2}])]
    ratios = separation(lossless, breaks)
    assert ratios["latent_rel_l2"] == pytest.approx(50) and ratios["1-ssim"] == pytest.approx(1.2)
    identical = [Variant("bf16", "lossless", [{"1-ssim": 0.0, "mse": 0.0, "latent_rel_l2": 0.0}])]
    assert separation(identical, breaks)["mse"] == float("inf") and separation(identical, [])["mse"] is None


def test_the_band_edge_sits_midway_between_kernels_and_breaks_when_a_break_is_close():
    """H100, synthetic weights, 512x512@6: compiled bf16 moved the latents 5.61e-3, 1 % noise 7.36e-3.
    A 1.5x margin (8.42e-3) let the noise through; the geometric middle (6.43e-3) does not."""
    lossless = [Variant("compile-regional", "lossless", [{"1-ssim": 7.02e-4, "mse": 1.67e-5, "latent_rel_l2": 5.61e-3}])]
    noise = Variant("noise:0.01", "break", [{"1-ssim": 7.57e-4, "mse": 1.83e-5, "latent_rel_l2": 7.36e-3}])
    shift = Variant("wrong-shift", "break", [{"1-ssim": 1.84e-3, "mse": 4.97e-5, "latent_rel_l2": 2.33e-2}])
    edge = band_edges(lossless, [noise, shift])
    assert edge["latent_rel_l2"] == (pytest.approx(np.sqrt(5.61e-3 * 7.36e-3)), "middle")
    assert 5.61e-3 < edge["latent_rel_l2"][0] < 7.36e-3
    assert edge["mse"] == (pytest.approx(np.sqrt(1.67e-5 * 1.83e-5)), "middle")
    assert band_edges(lossless)["latent_rel_l2"] == (pytest.approx(1.5 * 5.61e-3), "margin"), "no breaks: the margin"
    assert band_edges(lossless)["mse"][0] == pytest.approx(1.5 ** 2 * 1.67e-5), "a squared error scales as margin^2"
    far_break = Variant("far", "break", [{"1-ssim": 1e-2, "mse": 1e-3, "latent_rel_l2": 1.0}])
    assert band_edges(lossless, [far_break])["latent_rel_l2"] == (pytest.approx(1.5 * 5.61e-3), "margin"), \
        "the margin where it is narrower"
    inside = Variant("inside", "break", [{"1-ssim": 1e-4, "mse": 1e-6, "latent_rel_l2": 1e-3}])
    assert band_edges(lossless, [inside])["latent_rel_l2"] == (pytest.approx(1.5 * 5.61e-3), "margin"), \
        "no separation: the margin"
    band = propose_band(lossless, 1.5, [noise, shift])
    assert band["ssim"] == pytest.approx(1 - np.sqrt(7.02e-4 * 7.57e-4))


def test_restating_a_stored_calibration_reproposes_from_its_distances():
    stored = CalibrationEntry(Band(0.99), {}, {}, PROVENANCE, {"reference": "stored baseline", "variants": {"bf16": {"kind": "lossless", "distances": [{"1-ssim": 0.0, "mse": 0.0, "latent_rel_l2": 0.0}]},
                           "compile-regional": {"kind": "lossless",
                                                "distances": [{"1-ssim": 7e-4, "mse": 1.7e-5, "latent_rel_l2": 5.6e-3}]},
                           "noise:0.01": {"kind": "break",
                                          "distances": [{"1-ssim": 7.6e-4, "mse": 1.8e-5, "latent_rel_l2": 7.4e-3}]}}})
    result = restated(stored, Scenario(512, 512, 6), 1.5)
    assert result.band["latent_rel_l2"] == pytest.approx(np.sqrt(5.6e-3 * 7.4e-3))
    assert result.band_rule == {"1-ssim": "middle", "mse": "middle", "latent_rel_l2": "middle"}
    with pytest.raises(BaselineError, match="no lossless measurements"):
        restated(CalibrationEntry(Band(0.99), {}, {}, PROVENANCE, {"variants": {}}), Scenario(512, 512, 6), 1.5)


def test_restate_cli_rewrites_a_stored_band_only_when_asked(tmp_path, cli):
    folder = tmp_path / "nvidia-h100-80gb-hbm3" / "synthetic-x"
    folder.mkdir(parents=True)
    distances_of = {"lossless": {"1-ssim": 7e-4, "mse": 1.7e-5, "latent_rel_l2": 5.6e-3},
                    "break": {"1-ssim": 7.6e-4, "mse": 1.8e-5, "latent_rel_l2": 7.4e-3}}
    entry = {"band": {"ssim": 0.99895, "psnr": 44.2, "latent_rel_l2": 8.4e-3}, "margin": 1.5, "spread": {},
             "recorded_at": "2026-11-25T21:47:00+00:00",
             "variants": {"compile-regional": {"kind": "lossless", "distances": [distances_of["lossless"]]},
                          "noise:0.01": {"kind": "break", "distances": [distances_of["break"]]}}}
    (folder / "calibration.json").write_text(json.dumps({"flux_perf_store": 2,
                                                          "entries": {"512x512@6": {"fidelity": entry}}}))
    shown = cli("calibrate", "--restate", str(folder))
    assert shown.returncode == 0, shown.stderr
    assert "latent distance <= 6.44e-03" in shown.stdout and "nothing written" in shown.stdout
    assert json.loads((folder / "calibration.json").read_text())["entries"]["512x512@6"]["fidelity"]["band"] == \
        entry["band"]
    written = cli("calibrate", "--restate", str(folder), "--write", "--force")
    assert written.returncode == 0, written.stderr
    stored = json.loads((folder / "calibration.json").read_text())["entries"]["512x512@6"]["fidelity"]
    assert stored["band"]["latent_rel_l2"] == pytest.approx(np.sqrt(5.6e-3 * 7.4e-3))
    assert stored["restated_from"]["band"] == entry["band"]
    assert {name: v["distances"] for name, v in stored["variants"].items()} == \
        {name: v["distances"] for name, v in entry["variants"].items()}, "the measurements are kept"
    missing = cli("calibrate", "--restate", str(tmp_path))
    assert missing.returncode == 2 and "no calibration.json there" in missing.stderr
    (folder / "calibration.json").write_text("{half written")
    corrupt = cli("calibrate", "--restate", str(folder), "--write", "--force")
    assert corrupt.returncode != 0 and f"{folder / 'calibration.json'} is not valid JSON" in corrupt.stderr
    assert (folder / "calibration.json").read_text() == "{half written", "nothing rewritten"
    (folder / "calibration.json").write_text(json.dumps({"flux_perf_store": 2, "entries": {"512x512@6": {}}}))
    odd = cli("calibrate", "--restate", str(folder))  # a bare KeyError before: no 'fidelity' entry
    assert odd.returncode == 0 and "Traceback" not in odd.stderr, odd.stderr


def test_restating_a_calibration_without_lossless_measurements_names_the_command_for_its_folder(tmp_path, cli):
    """It said a bare `flux-perf calibrate --write`, which measures into the checkout's baselines/
    and leaves out the stacks whose spread the entry holds."""
    folder = tmp_path / "nvidia-h100-80gb-hbm3" / "synthetic-x"
    folder.mkdir(parents=True)
    entry = {"band": {"ssim": 0.999}, "spread": {"fp8": {"ssim": 1e-4}}, "recorded_at": "2026-11-25T21:47:00+00:00",
             "variants": {"noise:0.01": {"kind": "break", "distances": [{"1-ssim": 7.6e-4, "mse": 1.8e-5,
                                                                        "latent_rel_l2": 7.4e-3}]}}}
    (folder / "calibration.json").write_text(json.dumps({"flux_perf_store": 2,
                                                          "entries": {"512x512@6": {"fidelity": entry}}}))
    result = cli("calibrate", "--restate", folder)
    assert result.returncode != 0 and "holds no lossless measurements to restate: measure it again (flux-perf " \
        f"calibrate --write --stacks fp8 --scenarios 512x512@6 --baselines-dir {tmp_path})" in result.stderr, \
        result.stderr


def test_restating_a_calibration_that_tells_no_break_from_its_lossless_variants_is_not_usable(tmp_path, cli):
    """A stored band whose lossless variant lies past its break (stored before the check): restated, it
    would pass the break. Dry: `not usable`, exit 1; --write: `not written`, the file kept, exit 1
    (was: printed as any other, exit 0; --write stored it again)."""
    folder = tmp_path / "nvidia-h100-80gb-hbm3" / "synthetic-x"
    folder.mkdir(parents=True)
    far = {"1-ssim": 7e-3, "mse": 1.7e-4, "latent_rel_l2": 5.6e-2}
    near = {"1-ssim": 7.6e-4, "mse": 1.8e-5, "latent_rel_l2": 7.4e-3}
    entry = {"band": {"ssim": 0.99, "psnr": 30.0, "latent_rel_l2": 8.4e-2}, "margin": 1.5, "spread": {},
             "recorded_at": "2026-11-25T21:47:00+00:00",
             "variants": {"compile-regional": {"kind": "lossless", "distances": [far]},
                          "noise:0.01": {"kind": "break", "distances": [near]}}}
    text = json.dumps({"flux_perf_store": 2, "entries": {"512x512@6": {"fidelity": entry}}})
    (folder / "calibration.json").write_text(text)
    message = ("incomplete calibration: 512x512@6: not {}: no metric separates the breaks (noise:0.01) from the "
               "lossless variants (compile-regional)")
    dry = cli("calibrate", "--restate", str(folder))
    assert dry.returncode == 1 and message.format("usable") in dry.stderr, dry.stdout + dry.stderr
    written = cli("calibrate", "--restate", str(folder), "--write", "--force")
    assert written.returncode == 1 and message.format("written") in written.stderr, written.stdout + written.stderr
    assert (folder / "calibration.json").read_text() == text, "nothing rewritten"


@pytest.mark.parametrize("lost, written", [("break", False), ("stack", True)])
def test_restate_never_writes_a_band_from_a_calibration_that_lost_a_variant(tmp_path, cli, lost, written):
    """A lost exact-math variant or break: the band would be placed without it, never written. A lost
    stack spread: the band is whole, restated and written as `calibrate` stores it."""
    folder = tmp_path / "nvidia-h100-80gb-hbm3" / "synthetic-x"
    folder.mkdir(parents=True)
    failed = {"kind": lost, "distances": [], "error": "OutOfMemoryError: CUDA"}
    entry = {"band": {"ssim": 0.99895, "psnr": 44.2, "latent_rel_l2": 8.4e-3}, "margin": 1.5, "spread": {},
             "recorded_at": "2026-11-25T21:47:00+00:00",
             "variants": {"compile-regional": {"kind": "lossless", "distances": [
                              {"1-ssim": 7e-4, "mse": 1.7e-5, "latent_rel_l2": 5.6e-3}]},
                          "noise:0.01": {"kind": "break", "distances": [
                              {"1-ssim": 7.6e-4, "mse": 1.8e-5, "latent_rel_l2": 7.4e-3}]},
                          "lost": failed}}
    stored = json.dumps({"flux_perf_store": 2, "entries": {"512x512@6": {"fidelity": entry}}})
    (folder / "calibration.json").write_text(stored)
    result = cli("calibrate", "--restate", str(folder), "--write", "--force")
    assert result.returncode == (0 if written else 1), result.stdout + result.stderr
    assert ((folder / "calibration.json").read_text() != stored) is written
    if not written:
        assert ("incomplete calibration: 512x512@6: not written: lost (OutOfMemoryError: CUDA) failed"
                in result.stderr)


def test_the_latent_criterion_is_the_move_from_the_stacks_own_recorded_output():
    """A lossless change on top of a stack that is itself far from bf16 lands farther from bf16
    than the band allows, yet moves the stack's own output by only the change: it passes. A break
    of the same stack moves its own output beyond the band: it fails, though SSIM and PSNR stay."""
    stack_image, stack_latents = _perturbed(0.01, seed=3)  # a stack already 1 % away from bf16
    recorded = _recorded(stack_image, stack_latents)
    band = Band(0.0, 1.0, 0.012)  # only the latent criterion can fail here
    rng = np.random.default_rng(11)

    def on_top(scale):
        return stack_latents + scale * np.linalg.norm(stack_latents) / np.sqrt(stack_latents.size) \
            * rng.standard_normal(stack_latents.shape).astype(np.float32)

    kernel = on_top(0.008)  # a change smaller than the band, on top of the stack
    assert compare_images(BASE, stack_image, LATENTS, kernel).latent_rel_l2 > 0.012, "far from bf16..."
    for lossless in (True, False):
        result = _judge(stack_image, kernel, lossless=lossless, band=band, recorded=recorded, own=stack_latents)
        assert result.verdict is PASS, result.reasons  # ...but close to where the stack was
        assert 0.006 < result.own_latent_moved < 0.012 and "from this stack's recorded output" in result.message
        broken = _judge(stack_image, on_top(0.02), lossless=lossless, band=band, recorded=recorded, own=stack_latents)
        assert broken.verdict is FAIL and "from this stack's recorded output" in broken.reasons[0]


def test_a_move_within_the_stacks_build_to_build_spread_is_not_a_change():
    """FP8 at 512 on the H100 is not bit-exact between fresh builds (latents 2.6e-5 apart):
    that must not ask for a baseline update on every clean run."""
    stack_image, stack_latents = _perturbed(0.01, seed=3)
    recorded = _recorded(stack_image, stack_latents, sha="another build's image")
    band, spread = Band(0.0, 1.0, 0.01), Spread(latent_rel_l2=3e-5)

    def judged(latents, stack="stack", lossless=False):
        return _judge(stack_image, latents, lossless=lossless, band=band, recorded=recorded, own=stack_latents,
                      spread=spread, stack=stack)

    quiet = judged(stack_latents * (1 + 2e-5))  # moved 2e-5: inside 3x the spread
    assert quiet.verdict is PASS and quiet.changed is False and quiet.message is None
    moved = judged(stack_latents * (1 + 2e-3))
    assert moved.verdict is PASS and moved.changed and "update the baselines on purpose" in moved.message
    # A stack other than bf16 may be compiled code, which moves between machines (H100): said so.
    assert "compiled stacks also move from one machine to another" in moved.message
    bf16 = judged(stack_latents * (1 + 2e-3), stack="bf16", lossless=True)
    assert bf16.changed and "update the baselines on purpose" in bf16.message
    assert "compiled stacks" not in bf16.message


def test_calibrate_update_gate_cycle_on_the_tiny_model(tmp_path, cli, capsys, monkeypatch):
    """What a user of new weights does: calibrate, record, gate; then planted changes against it.
    On a CPU in fp32 exact-math variants give identical outputs, so a 0.02 % perturbation stands
    in for a kernel change."""
    copy_budgets(tmp_path / "baselines")
    budgets = tmp_path / "baselines" / "budgets.toml"  # the outer floor of this lossy stack on the tiny model
    budgets.write_text(budgets.read_text().replace("[fidelity.ssim]\n", '[fidelity.ssim]\n"guidance:3.0" = 0.99\n'))
    common = ("--device", "cpu", "--scenarios", "64x64@2", "--baselines-dir", str(tmp_path / "baselines"))
    calibrated = cli("calibrate", *common, "--lossless", "noise:0.0002", "--stacks", "guidance:3.0",
                               "--breaks", "noise:0.01,wrong-shift", "--write", "--json", str(tmp_path / "cal.json"))
    assert calibrated.returncode == 0, calibrated.stdout[-2000:] + calibrated.stderr[-2000:]
    assert "proposed lossless band: SSIM >=" in calibrated.stdout and "best: " in calibrated.stdout
    assert "new: band SSIM" in calibrated.stdout
    proposal = json.loads((tmp_path / "cal.json").read_text())["scenarios"]["64x64@2"]
    assert proposal["separation"]["latent_rel_l2"] > 1, "the planted breaks lie outside the band"

    def suite(*extra):
        return run_gpu_suite_here(capsys, monkeypatch, "-m", "h100", ROOT / "tests/h100/test_fidelity.py",
                                  "--flux-device", "cpu", "--flux-model", "tiny",
                          "--flux-scenarios", "64x64@2", f"--flux-baselines-dir={tmp_path / 'baselines'}",
                          f"--flux-report-dir={tmp_path / 'report'}", "--flux-rounds", "2", "--flux-scripted-clock", "0.1",
                          "--flux-stacks", "bf16,guidance:3.0", "-W", "always", *extra)

    def fidelity():
        return {r["stack"]: r["fidelity"] for r in json.loads((tmp_path / "report" / "results.json").read_text())["records"]}

    updated = suite("--flux-update-baselines")
    assert updated.returncode == 0, updated.stdout[-3000:]
    assert "64x64@2 guidance:3.0: fidelity new: SSIM" in updated.stdout
    clean = suite()
    assert clean.returncode == 0, clean.stdout[-3000:]
    assert {f["changed"] for f in fidelity().values()} == {False}
    kernel_change = suite("--flux-plant", "noise:0.0002")
    assert kernel_change.returncode == 0, kernel_change.stdout[-3000:]
    assert "output changed within the lossless band; if the change is yours, update the baselines on purpose" in kernel_change.stdout, kernel_change.stdout[-4000:]
    assert fidelity()["guidance:3.0"]["changed"] is True
    broken = suite("--flux-plant", "noise:0.01")
    assert broken.returncode == 1, broken.stdout[-3000:]
    results = fidelity()
    assert any(r.startswith("outside the lossless band") for r in results["bf16"]["reasons"])
    assert any(r.startswith("fidelity moved beyond its tolerance") for r in results["guidance:3.0"]["reasons"])
    assert "## Fidelity against the bf16 baseline" in (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.parametrize("failing, written, message", [
    ("wrong-shift", False, "64x64@2: not written: wrong-shift (RuntimeError: out of memory) failed, so the band "
                           "would be placed without them; run it again"),
    ("guidance:3.0", True, "64x64@2: no build-to-build spread for guidance:3.0: the gate allows them the band alone"),
])
def test_a_calibration_missing_a_variant_says_so_and_never_stores_a_band_placed_without_it(
        tmp_path, cli, monkeypatch, failing, written, message):
    import flux_perf.gate.calibrate as calibrate

    output = calibrate._output

    def failing_output(runner, stack_spec, scenario, plant=None, **kwargs):
        if failing in (stack_spec, plant):
            raise RuntimeError("out of memory")
        return output(runner, stack_spec, scenario, plant, **kwargs)

    monkeypatch.setattr(calibrate, "_output", failing_output)
    copy_budgets(tmp_path / "baselines")
    result = cli("calibrate", "--device", "cpu", "--scenarios", "64x64@2", "--baselines-dir", tmp_path / "baselines",
                 "--lossless", "noise:0.0002", "--stacks", "guidance:3.0", "--breaks", "noise:0.01,wrong-shift",
                 "--repeats", "2", "--write")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"incomplete calibration: {message}" in result.stderr
    stored = list((tmp_path / "baselines").glob("*/*/calibration.json"))
    assert bool(stored) is written, stored


def test_spread_between_builds_is_in_the_gates_units():
    builds = Variant("fp8", "stack", [{"1-ssim": 1e-3, "mse": 1e-5, "latent_rel_l2": 0.02},
                                      {"1-ssim": 1.5e-3, "mse": 2e-5, "latent_rel_l2": 0.021}])
    spread = builds.spread
    assert spread["ssim"] == pytest.approx(5e-4) and spread["latent_rel_l2"] == pytest.approx(1e-3)
    assert spread["psnr"] == pytest.approx(10 * np.log10(2)), "dB, as the tolerance compares PSNR"


@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")  # torch says so when its caches are off
def test_cold_compiles_start_from_no_compiled_code_and_no_caches():
    """calibrate --cold-compiles: a rebuild traces and compiles again, with inductor's caches off,
    and leaves the settings as they were."""
    import torch

    from flux_perf.gate.calibrate import compiled_from_scratch

    compiles = []

    def counting_backend(graph, inputs):
        compiles.append(torch._inductor.config.force_disable_caches)
        return graph.forward

    double = torch.compile(lambda x: x * 2 + 1, backend=counting_backend)
    double(torch.ones(2))
    double(torch.ones(2))
    assert compiles == [False], "compiled once, then reused"
    with compiled_from_scratch():
        double(torch.ones(2))
    assert compiles == [False, True], "compiled again, caches off"
    assert torch._inductor.config.force_disable_caches is False


def test_a_lossless_variant_that_cannot_run_here_refuses_write_before_measuring(tmp_path, cli, monkeypatch):
    """A band placed without one of its lossless variants is narrower than the method says: --write
    refuses it up front, naming the variant and a command with what runs here; a dry proposal is
    marked not usable (exit 1)."""
    import flux_perf.gate.calibrate as calibrate

    measured = []
    output = calibrate._output
    monkeypatch.setattr(calibrate, "_output", lambda *a, **k: measured.append(a[1]) or output(*a, **k))
    copy_budgets(tmp_path / "baselines")
    args = ("calibrate", "--device", "cpu", "--scenarios", "64x64@2", "--baselines-dir", tmp_path / "baselines",
            "--lossless", "noise:0.0002,attn-cudnn", "--stacks", "fp8", "--breaks", "noise:0.01", "--repeats", "1")
    refused = cli(*args, "--write")
    assert refused.returncode == 2 and measured == [], refused.stderr[-2000:]
    assert "cannot run here: attn-cudnn: " in refused.stderr
    assert "flux-perf calibrate --write --lossless noise:0.0002 --breaks noise:0.01" in refused.stderr
    dry = cli(*args)
    assert dry.returncode == 1 and measured, dry.stderr[-2000:]
    assert "incomplete calibration: not usable: the band leaves out what cannot run here (attn-cudnn: " in dry.stderr
    assert not list((tmp_path / "baselines").glob("*/*/calibration.json"))


def test_a_calibration_that_tells_no_break_from_its_lossless_variants_writes_no_band(tmp_path, cli):
    """A lossless variant farther out than the breaks (noise:0.5) places a band that passes them: --write
    keeps the stored band (was replaced, SSIM 1.0 -> 0.885, exit 0, and 1 % noise then passed), and a
    dry proposal says it is not usable, exit 1 (was: printed as any other, exit 0)."""
    copy_budgets(tmp_path / "baselines")
    args = ("calibrate", "--device", "cpu", "--scenarios", "64x64@2", "--baselines-dir", tmp_path / "baselines",
            "--stacks", "fused-qkv", "--repeats", "1")
    kept = cli(*args, "--write", "--lossless", "noise:0.0002")
    assert kept.returncode == 0, kept.stderr[-2000:]
    stored = next((tmp_path / "baselines").glob("*/*/calibration.json"))
    before = stored.read_text()
    refused = cli(*args, "--write", "--lossless", "noise:0.5")
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    unseparated = ("64x64@2: not {}: no metric separates the breaks (noise:0.01, wrong-shift) from the lossless "
                   "variants (bf16, noise:0.5): SSIM ")
    assert f"incomplete calibration: {unseparated.format('written')}" in refused.stderr
    assert stored.read_text() == before, "the band that told the breaks apart stays"
    dry = cli(*args, "--lossless", "noise:0.5")
    assert dry.returncode == 1, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert f"incomplete calibration: {unseparated.format('usable')}" in dry.stderr
    assert stored.read_text() == before
    # No lossless variant moved the output: the band is exact, and a break that moved nothing (wrong-shift
    # at one step) no band can see, so it is written (`baselines update --scenarios 64x64@1` on a CPU).
    same = {"1-ssim": 0.0, "mse": 0.0, "latent_rel_l2": 0.0}
    exact = ScenarioCalibration(Scenario(64, 64, 1), "fresh", [Variant("fused-qkv", "lossless", [same]),
                                                                Variant("wrong-shift", "break", [same])], 1.5)
    assert exact.unseparated() is None and exact.band["ssim"] == 1.0


def test_a_stack_this_machine_cannot_measure_is_not_judged_never_exit_0(tmp_path, cli):
    """fp8 cannot run on a CPU: the band is written (the gate allows fp8 the band alone, stricter), but
    its spread was never measured, so the exit is 6 (was 0 beside `not measured: fp8`)."""
    copy_budgets(tmp_path / "baselines")
    result = cli("calibrate", "--device", "cpu", "--scenarios", "64x64@2", "--baselines-dir", tmp_path / "baselines",
                 "--lossless", "noise:0.0002", "--stacks", "fp8,fused-qkv", "--repeats", "1", "--write")
    assert result.returncode == 6, result.stdout[-2000:] + result.stderr[-2000:]
    assert "exit 6: no build-to-build spread for what this machine cannot run (fp8: attn-cudnn needs a CUDA GPU" \
        in result.stderr
    assert list((tmp_path / "baselines").glob("*/*/calibration.json")), "the band itself was measured whole"
