"""Output fidelity against a reference: SSIM and PSNR of the images (scikit-image), the relative
L2 distance of the final latents (before the VAE and uint8 rounding blur it), and a
side-by-side picture (reference | output | SSIM map) for failures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_RANGE = 255  # decoded uint8 images


@dataclass(frozen=True)
class Fidelity:
    ssim: float
    psnr: float  # dB; inf for identical images
    ssim_map: np.ndarray  # (H, W), mean over colour channels
    latent_rel_l2: float | None = None  # ||z - z_ref|| / ||z_ref|| of the final latents, when both are known

    def to_dict(self) -> dict:
        return {"ssim": self.ssim, "psnr": None if np.isinf(self.psnr) else self.psnr,
                "identical": bool(np.isinf(self.psnr)), "latent_rel_l2": self.latent_rel_l2}


def latent_distance(reference: np.ndarray, latents: np.ndarray) -> float:
    """Relative L2 distance of two final latents (the VAE decoder's input)."""
    if reference.shape != latents.shape:
        raise ValueError(f"latent shapes differ: reference {reference.shape}, output {latents.shape}")
    reference, latents = reference.astype(np.float64), latents.astype(np.float64)
    norm = float(np.linalg.norm(reference))
    if not np.isfinite(norm) or norm == 0:
        raise ValueError(f"reference latents have norm {norm}: not a usable reference")
    return float(np.linalg.norm(latents - reference) / norm)


def _check_pair(reference: np.ndarray, output: np.ndarray) -> None:
    for name, image in (("reference", reference), ("output", output)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{name} image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if reference.shape != output.shape:
        raise ValueError(f"image sizes differ: reference {reference.shape[:2]}, output {output.shape[:2]}")


def compare_images(reference: np.ndarray, output: np.ndarray, reference_latents: np.ndarray | None = None,
                   latents: np.ndarray | None = None) -> Fidelity:
    """SSIM over RGB (per channel, then averaged; Gaussian window as in Wang et al. 2004)
    and PSNR, both with the uint8 data range stated explicitly; the latent distance when
    both latents are given."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    _check_pair(reference, output)
    ssim, ssim_map = structural_similarity(
        reference, output, channel_axis=-1, data_range=DATA_RANGE,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True,
    )
    if np.array_equal(reference, output):
        psnr = float("inf")
    else:
        psnr = float(peak_signal_noise_ratio(reference, output, data_range=DATA_RANGE))
    distance = None
    if reference_latents is not None and latents is not None:
        distance = latent_distance(reference_latents, latents)
    return Fidelity(float(ssim), psnr, ssim_map.mean(axis=-1), distance)


def write_side_by_side(reference: np.ndarray, output: np.ndarray, fidelity: Fidelity, path: str | Path,
                       title: str) -> Path:
    """PNG with reference | output | SSIM map and the numbers in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4), constrained_layout=True)
    axes[0].imshow(reference)
    axes[0].set_title("bf16 baseline")
    axes[1].imshow(output)
    axes[1].set_title("this run")
    # Scale the map to what it holds: near-identical images would otherwise show one flat colour.
    low = float(min(0.99, np.floor(fidelity.ssim_map.min() * 100) / 100))
    shown = axes[2].imshow(fidelity.ssim_map, cmap="magma", vmin=low, vmax=1.0)
    axes[2].set_title("local SSIM (dark = differs)")
    for axis in axes:
        axis.set_axis_off()
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    psnr = "identical" if np.isinf(fidelity.psnr) else f"PSNR {fidelity.psnr:.2f} dB"
    figure.suptitle(f"{title}\nSSIM {fidelity.ssim:.4f}, {psnr}")
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
