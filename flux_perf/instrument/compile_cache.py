"""Carry torch.compile's caches between runs (torch.compiler's portable cache artifacts),
so a CI runner or a fresh machine does not pay full compilation every time."""

from __future__ import annotations

from pathlib import Path

import torch

from ..store.files import atomic_write


def load(path: Path, log=print) -> bool:
    if not path.is_file():
        log(f"compile cache {path} not found: compiling from scratch (it is written at the end)")
        return False
    if not hasattr(torch.compiler, "load_cache_artifacts"):
        log(f"torch {torch.__version__} has no torch.compiler.load_cache_artifacts: ignoring {path}")
        return False
    info = torch.compiler.load_cache_artifacts(path.read_bytes())
    log(f"compile cache loaded from {path} ({path.stat().st_size / 2**20:.1f} MiB){'' if info else ' (empty)'}")
    return True


def save(path: Path, log=print) -> bool:
    if not hasattr(torch.compiler, "save_cache_artifacts"):
        return False
    artifacts = torch.compiler.save_cache_artifacts()
    if not artifacts:
        return False
    data, _info = artifacts
    atomic_write(path, data)
    log(f"compile cache saved to {path} ({len(data) / 2**20:.1f} MiB)")
    return True
