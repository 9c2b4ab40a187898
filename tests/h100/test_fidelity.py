"""Fidelity gates: the timed output against the bf16 baseline: the floor, the lossless band, the
recorded fidelity. No baseline is a failure naming the command that records it; a case judged by
the floor alone (no calibration, or a lossy stack with no recorded fidelity) is a gap: its own outcome
(GAP, never a pass), a failure under --flux-strict."""

import warnings
from pathlib import Path

import pytest

from flux_perf.gate.fidelity import FidelityVerdict
from flux_perf.plugin import FidelityGap

pytestmark = pytest.mark.h100


def test_fidelity_floor(flux_result):
    result = flux_result
    assert result.error is None, result.error
    fidelity = result.fidelity
    if fidelity.verdict is FidelityVerdict.UPDATED:
        assert Path(fidelity.baseline).is_file(), f"{result.id}: update reported, no baseline at {fidelity.baseline}"
        return
    assert fidelity.verdict is not FidelityVerdict.ERROR, f"{result.id}: not judged: {fidelity.message}"
    stale = f" (baseline stale: {'; '.join(fidelity.stale)})" if fidelity.stale else ""
    assert fidelity.verdict in (FidelityVerdict.PASS, FidelityVerdict.GAP), (
        f"{result.id}: {'; '.join(fidelity.reasons)} (SSIM {fidelity.ssim:.5f}, PSNR {fidelity.psnr}, "
        f"latent distance {fidelity.latent_rel_l2}); side-by-side: {fidelity.evidence}{stale}"
    )
    if stale:
        warnings.warn(f"{result.id}: passed against a stale baseline{stale}", stacklevel=1)
    if fidelity.changed:
        warnings.warn(f"{result.id}: {fidelity.message}", stacklevel=1)
    if fidelity.gap:  # last: its own outcome (GAP), never a plain pass
        if fidelity.strict:
            pytest.fail(f"{result.id}: {fidelity.gap} (--flux-strict)")
        raise FidelityGap(f"{result.id}: {fidelity.gap}")
