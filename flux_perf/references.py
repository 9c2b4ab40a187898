"""The sanctioned update: what a measured case records as the new reference, and the line
that tells the user what changed. The only code that writes references (through the store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .baselines import BaselineError, BaselineKey, BaselineStore, png_sha256
from .fidelity import compare_images
from .measure import MEASUREMENT_VERSION
from .provenance import git_commit, now_iso, software_versions
from .scenarios import Scenario
from .stacks import BASELINE
from .stats import Summary, summarize


def _change(old: float | None, new: float) -> str:
    return f"{old:.3f} s -> {new:.3f} s ({new / old - 1:+.1%})" if old else f"new {new:.3f} s"


def record_latency(store: BaselineStore, key: BaselineKey, stack_name: str, stack_key: str,
                   samples: list[float], *, sm_clock_mhz: float | None, driver_version: str | None,
                   force: bool) -> str:
    """Record a stack's rounds as its latency reference; return what changed."""
    try:
        old = store.recorded_latency(key, stack_name)
    except BaselineError:
        old = None  # a broken entry is replaced on purpose
    wall = summarize(samples)
    software = software_versions()
    store.record_latency(key, stack_name, {
        "median_s": wall.median, "ci_low_s": wall.ci_low, "ci_high_s": wall.ci_high, "rounds": wall.n,
        "samples_s": list(samples), "sm_clock_mhz": sm_clock_mhz, "stack": stack_key,
        "recorded_at": now_iso(), "commit": git_commit(), "driver_version": driver_version,
        "software": {name: software.get(name) for name in ("torch", "diffusers", "cuda", "torchao")},
        "measurement_version": MEASUREMENT_VERSION,
    }, force=force)
    return f"{key} {stack_name}: latency {_change((old or {}).get('median_s'), wall.median)}"


def record_fidelity(store: BaselineStore, key: BaselineKey, stack_name: str, stack_key: str, *, ssim: float,
                    psnr: float | None, latent_rel_l2: float | None, image: np.ndarray, lossless: bool,
                    force: bool, latents: np.ndarray | None = None) -> str:
    """Record a stack's fidelity against the bf16 baseline, its image's hash and (but for bf16,
    whose latents are the baseline's) its own final latents; return what changed."""
    try:
        old = store.recorded_fidelity(key, stack_name)
    except BaselineError:
        old = None
    software = software_versions()
    store.record_fidelity(key, stack_name, {
        "ssim": ssim, "psnr": psnr, "latent_rel_l2": latent_rel_l2, "image_sha256": png_sha256(image),
        "stack": stack_key, "lossless": lossless, "recorded_at": now_iso(), "commit": git_commit(),
        "software": {name: software.get(name) for name in ("torch", "diffusers", "cuda", "torchao")},
    }, latents=None if stack_name == BASELINE else latents, force=force)
    distance = "" if latent_rel_l2 is None else f", latent distance {latent_rel_l2:.2e}"
    before = f"SSIM {old['ssim']:.5f} -> " if old else "new: SSIM "
    return f"{key} {stack_name}: fidelity {before}{ssim:.5f}{distance}"


def record_image(store: BaselineStore, key: BaselineKey, scenario: Scenario, image: np.ndarray, *,
                 wall: Summary, deterministic: bool, model_label: str, gpu: dict, force: bool,
                 latents: np.ndarray | None = None) -> tuple[Path, str]:
    """Write the bf16 reference image (and final latents) with its provenance; return its path and what changed."""
    message = f"{key}: new baseline image"
    try:
        old = store.load(key, scenario)
        message = f"{key}: baseline image replaced, SSIM old vs new {compare_images(old.image, image).ssim:.4f}"
    except BaselineError as error:
        if not str(error).startswith("no baseline"):
            message += f" (previous one unusable: {error})"
    path = store.save(key, image, {
        "scenario": scenario.to_dict(), "stack": "bf16", "model": model_label, "gpu": gpu,
        "software": software_versions(), "commit": git_commit(), "created_at": now_iso(),
        "latency": wall.to_dict(), "deterministic_across_rounds": deterministic,
    }, latents=latents, force=force)
    return path, message
