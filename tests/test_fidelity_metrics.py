import numpy as np
import pytest

from flux_perf.gate.images import compare_images, write_side_by_side
from flux_perf.model.inputs import reference_image


@pytest.fixture
def photo():
    return np.array(reference_image(128, 128))


def test_identical_images(photo):
    fidelity = compare_images(photo, photo.copy())
    assert fidelity.ssim == pytest.approx(1.0) and np.isinf(fidelity.psnr)
    assert fidelity.to_dict()["identical"] and fidelity.to_dict()["psnr"] is None


def test_known_distortions_give_known_drops(photo):
    rng = np.random.default_rng(0)
    noisy = np.clip(photo + rng.normal(0, 10, photo.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(photo + rng.normal(0, 40, photo.shape), 0, 255).astype(np.uint8)
    light, heavy = compare_images(photo, noisy), compare_images(photo, noisier)
    assert 0.5 < light.ssim < 0.95 and heavy.ssim < light.ssim
    assert light.psnr == pytest.approx(28.1, abs=0.5)  # 20 log10(255 / 10), less clipping
    shifted = np.roll(photo, 8, axis=1)
    assert compare_images(photo, shifted).ssim < 0.8


def test_colour_matters(photo):
    swapped = photo[..., ::-1].copy()
    assert compare_images(photo, swapped).ssim < 0.99


def test_bad_inputs_are_named(photo):
    with pytest.raises(ValueError, match="image sizes differ"):
        compare_images(photo, photo[:64])
    with pytest.raises(ValueError, match="output image must be uint8"):
        compare_images(photo, photo.astype(np.float32))


def test_side_by_side_is_written(photo, tmp_path):
    noisy = np.clip(photo.astype(int) + 30, 0, 255).astype(np.uint8)
    path = write_side_by_side(photo, noisy, compare_images(photo, noisy), tmp_path / "x" / "evidence.png", "t")
    assert path.exists() and path.stat().st_size > 10_000
