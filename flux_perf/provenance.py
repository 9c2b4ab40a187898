"""Where a result came from: software versions, git commit, date."""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

from . import __version__

_PACKAGES = ("diffusers", "transformers", "torchao", "transformer-engine", "flash-attn", "torch-tensorrt",
             "pytest-benchmark", "scikit-image", "nvidia-ml-py")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def software_versions() -> dict:
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "flux_perf": __version__,
    }
    versions.update({name: _version(name) for name in _PACKAGES})
    return versions


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def minor(version: str | None) -> str | None:
    """'2.11.0+cu130' -> '2.11'."""
    if not version:
        return version
    return ".".join(version.split("+")[0].split(".")[:2])
