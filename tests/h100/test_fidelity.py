"""Fidelity gates: the image of the timed rounds against the stored bf16 baseline (SSIM floor)."""

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
        f"{result.id}: SSIM {fidelity.ssim:.4f} below floor {fidelity.floor} ({fidelity.floor_source}), "
        f"PSNR {fidelity.psnr}; side-by-side: {fidelity.evidence}{stale}"
    )
    if stale:
        warnings.warn(f"{result.id}: passed against a stale baseline{stale}", stacklevel=1)
