"""The fidelity gate: the floor as outer bound, the calibrated lossless band, each stack's recorded
fidelity with its tolerance, and the calibrate -> update -> gate cycle on the tiny model."""

import json

import numpy as np
import pytest
from helpers import copy_budgets, run_flux_perf, run_pytest

from flux_perf.baselines import BaselineCorrupt, BaselineKey, BaselineStore, png_sha256
from flux_perf.calibrate import Variant, distances, propose_band, separation
from flux_perf.fidelity import compare_images
from flux_perf.judges import fidelity_tolerance, judge_fidelity
from flux_perf.scenarios import Scenario

RNG = np.random.default_rng(0)
BASE = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
LATENTS = RNG.standard_normal((16, 8, 8)).astype(np.float32)


def _perturbed(scale: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    image = np.clip(BASE.astype(float) + rng.normal(0, 255 * scale, BASE.shape), 0, 255).round().astype(np.uint8)
    return image, LATENTS + scale * rng.standard_normal(LATENTS.shape).astype(np.float32)


def _band_around(scale: float) -> dict:
    image, latents = _perturbed(scale, seed=7)
    measured = compare_images(BASE, image, LATENTS, latents)
    lossless = Variant("kernel", "lossless", [distances(measured)])
    return {"band": propose_band([lossless], 1.5)}


def _judge(image, latents, *, lossless, floor=0.5, calibration=None, recorded=None):
    return judge_fidelity(BASE, image, floor, "test floor", lossless=lossless, baseline_latents=LATENTS,
                          latents=latents, image_sha256=png_sha256(image), recorded=recorded,
                          calibration=calibration, stack_name="stack")


def test_a_change_inside_the_lossless_band_passes_and_says_so():
    calibration = _band_around(0.01)
    result = _judge(*_perturbed(0.008), lossless=True, calibration=calibration)
    assert result.verdict == "pass", result.reasons
    assert "output changed within the lossless band; update the baselines on purpose" in result.message


def test_a_break_outside_the_lossless_band_fails_naming_the_metrics():
    result = _judge(*_perturbed(0.05), lossless=True, calibration=_band_around(0.01))
    assert result.verdict == "fail"
    assert result.reasons[0].startswith("outside the lossless band: SSIM")
    assert "latent distance" in result.reasons[0] and "PSNR" in result.reasons[0]


def test_a_tighter_hand_floor_yields_to_the_calibrated_band():
    """bf16's 0.9999 floor failed exact kernel changes; with a calibration the band decides."""
    image, latents = _perturbed(0.008)
    calibration = _band_around(0.01)
    assert _judge(image, latents, lossless=True, floor=0.9999).verdict == "fail"  # uncalibrated: the floor
    result = _judge(image, latents, lossless=True, floor=0.9999, calibration=calibration)
    assert result.verdict == "pass" and "lossless band" in result.floor_source


def test_a_lossy_stack_fails_when_its_fidelity_moves_beyond_its_tolerance():
    lossy_image, lossy_latents = _perturbed(0.05)
    recorded = {**compare_images(BASE, lossy_image, LATENTS, lossy_latents).to_dict(),
                "image_sha256": png_sha256(lossy_image)}
    calibration = _band_around(0.002)
    assert _judge(lossy_image, lossy_latents, lossless=False, calibration=calibration,
                  recorded=recorded).verdict == "pass"
    # The same stack broken further (20 % more error): far beyond what a lossless change would add.
    result = _judge(*_perturbed(0.06), lossless=False, calibration=calibration, recorded=recorded)
    assert result.verdict == "fail" and result.reasons[0].startswith("fidelity moved beyond its tolerance")


def test_tolerance_is_what_a_lossless_change_on_top_would_add():
    band = {"ssim": 0.999, "psnr": 50.0, "latent_rel_l2": 0.003}
    tolerance = fidelity_tolerance({"ssim": 0.99, "psnr": 40.0, "latent_rel_l2": 0.04}, band)
    assert tolerance["ssim"] == pytest.approx(0.001)
    assert tolerance["psnr"] == pytest.approx(10 * np.log10(1.1))  # MSEs add: 1e-4 + 1e-5
    assert tolerance["latent_rel_l2"] == pytest.approx(np.hypot(0.04, 0.003) - 0.04)
    spread = fidelity_tolerance({"ssim": 0.99}, band, {"ssim": 0.01})
    assert spread["ssim"] == pytest.approx(0.03), "3x a larger run-to-run spread wins"


def test_uncalibrated_weights_are_judged_by_the_floor_and_told_so():
    result = _judge(*_perturbed(0.05), lossless=False, floor=0.5)
    assert result.verdict == "pass" and "not calibrated" in result.message
    assert _judge(*_perturbed(0.05), lossless=False, floor=0.99).reasons[0].startswith("SSIM")


def test_separation_names_the_metric_that_tells_breaks_from_kernels():
    lossless = [Variant("kernel", "lossless", [{"1-ssim": 1e-4, "mse": 1e-6, "latent_rel_l2": 1e-3}])]
    breaks = [Variant("noise", "break", [{"1-ssim": 1.2e-4, "mse": 2e-6, "latent_rel_l2": 5e-2}])]
    ratios = separation(lossless, breaks)
    assert ratios["latent_rel_l2"] == pytest.approx(50) and ratios["1-ssim"] == pytest.approx(1.2)
    identical = [Variant("bf16", "lossless", [{"1-ssim": 0.0, "mse": 0.0, "latent_rel_l2": 0.0}])]
    assert separation(identical, breaks)["mse"] == float("inf") and separation(identical, [])["mse"] is None


def test_latents_are_stored_with_their_hash_and_checked(tmp_path):
    store, key = BaselineStore(tmp_path), BaselineKey("cpu", "tiny-x", "64x64@2")
    store.save(key, BASE, {"scenario": Scenario(64, 64, 2).to_dict()}, latents=LATENTS, force=True)  # CI=true too
    assert np.array_equal(store.load(key, Scenario(64, 64, 2)).latents, LATENTS)
    store.latents_path(key).write_bytes(b"not numpy")
    with pytest.raises(BaselineCorrupt, match="do not match the sha256"):
        store.load(key, Scenario(64, 64, 2))
    (tmp_path / key.folder / "calibration.json").write_text(json.dumps({"64x64@2": {"fidelity": {"band": {}}}}))
    with pytest.raises(BaselineCorrupt, match="band.ssim=None is not an SSIM"):
        store.calibration(key)


def test_calibrate_update_gate_cycle_on_the_tiny_model(tmp_path):
    """What a user of new weights does: calibrate, record, gate; then planted changes against it.
    On a CPU in fp32 exact-math variants give identical outputs, so a 0.02 % perturbation stands
    in for a kernel change."""
    copy_budgets(tmp_path / "baselines")
    budgets = tmp_path / "baselines" / "budgets.toml"  # the outer floor of this lossy stack on the tiny model
    budgets.write_text(budgets.read_text().replace("[fidelity.ssim]\n", '[fidelity.ssim]\n"guidance:3.0" = 0.99\n'))
    common = ("--device", "cpu", "--scenarios", "64x64@2", "--baselines-dir", str(tmp_path / "baselines"))
    calibrated = run_flux_perf("calibrate", *common, "--lossless", "noise:0.0002", "--stacks", "guidance:3.0",
                               "--breaks", "noise:0.01,wrong-shift", "--write", "--json", str(tmp_path / "cal.json"))
    assert calibrated.returncode == 0, calibrated.stdout[-2000:] + calibrated.stderr[-2000:]
    assert "proposed lossless band: SSIM >=" in calibrated.stdout and "best: " in calibrated.stdout
    assert "new: band SSIM" in calibrated.stdout
    proposal = json.loads((tmp_path / "cal.json").read_text())["scenarios"]["64x64@2"]
    assert proposal["separation"]["latent_rel_l2"] > 1, "the planted breaks lie outside the band"

    def suite(*extra):
        return run_pytest("-m", "h100", "tests/h100/test_fidelity.py", "--flux-device", "cpu", "--flux-model", "tiny",
                          "--flux-scenarios", "64x64@2", f"--flux-baselines-dir={tmp_path / 'baselines'}",
                          f"--flux-report-dir={tmp_path / 'report'}", "--flux-rounds", "2",
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
    assert "output changed within the lossless band; update the baselines on purpose" in kernel_change.stdout, kernel_change.stdout[-4000:]
    assert fidelity()["guidance:3.0"]["changed"] is True
    broken = suite("--flux-plant", "noise:0.01")
    assert broken.returncode == 1, broken.stdout[-3000:]
    results = fidelity()
    assert any(r.startswith("outside the lossless band") for r in results["bf16"]["reasons"])
    assert any(r.startswith("fidelity moved beyond its tolerance") for r in results["guidance:3.0"]["reasons"])
    assert "## Fidelity against the bf16 baseline" in (tmp_path / "report" / "summary.md").read_text()


def test_spread_between_builds_is_in_the_gates_units():
    builds = Variant("fp8", "stack", [{"1-ssim": 1e-3, "mse": 1e-5, "latent_rel_l2": 0.02},
                                      {"1-ssim": 1.5e-3, "mse": 2e-5, "latent_rel_l2": 0.021}])
    spread = builds.spread
    assert spread["ssim"] == pytest.approx(5e-4) and spread["latent_rel_l2"] == pytest.approx(1e-3)
    assert spread["psnr"] == pytest.approx(10 * np.log10(2)), "dB, as the tolerance compares PSNR"
