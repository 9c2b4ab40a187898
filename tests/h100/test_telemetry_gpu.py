"""The instrument itself on the GPU: telemetry recorded, rounds undisturbed, output deterministic."""

import warnings

import pytest

pytestmark = pytest.mark.h100


def test_telemetry_recorded(flux_result):
    result = flux_result
    assert result.error is None, result.error
    telemetry = result.timed.telemetry
    if telemetry is None or not telemetry.available:
        pytest.skip(f"NVML telemetry unavailable: {telemetry.reason if telemetry else 'CPU run'}")
    summary = telemetry.summary()
    assert summary["sample_count"] > 0, "the NVML sampler recorded no sample during the timed rounds"
    assert summary["sm_clock_mhz"]["median"] > 0 and summary["power_w"]["median"] > 0, summary
    # The energy counter ticks in coarse steps: judge it only over a second of work or more.
    if telemetry.duration_s >= 1.0:
        assert telemetry.energy_per_image_j(result.timed.wall.n) > 0, summary
    if result.timed.disturbed:
        warnings.warn(f"{result.id}: timed rounds disturbed: {', '.join(result.timed.disturbed)}", stacklevel=1)


def test_same_seed_same_image(flux_result):
    result = flux_result
    assert result.error is None, result.error
    assert result.timed.deterministic, f"{result.id}: timed rounds with the same seed gave different images"
