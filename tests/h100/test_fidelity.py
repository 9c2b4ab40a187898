"""Fidelity gates: the timed output against the bf16 baseline: the floor, the lossless band, the recorded fidelity."""

import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.h100


def test_fidelity_floor(flux_result):
    result = flux_result
    assert result.error is None, result.error
    fidelity = result.fidelity
    if fidelity.verdict == "updated":
        assert Path(fidelity.baseline).is_file(), f"{result.id}: update reported, no baseline at {fidelity.baseline}"
        return
    assert fidelity.verdict != "error", fidelity.message
    stale = f" (baseline stale: {'; '.join(fidelity.stale)})" if fidelity.stale else ""
    assert fidelity.verdict == "pass", (
        f"{result.id}: {'; '.join(fidelity.reasons)} (SSIM {fidelity.ssim:.5f}, PSNR {fidelity.psnr}, "
        f"latent distance {fidelity.latent_rel_l2}); side-by-side: {fidelity.evidence}{stale}"
    )
    if stale:
        warnings.warn(f"{result.id}: passed against a stale baseline{stale}", stacklevel=1)
    if fidelity.changed:
        warnings.warn(f"{result.id}: {fidelity.message}", stacklevel=1)
