"""The guide's environment variables: which the suite applies, which it leaves, and why.

Applied before CUDA initialises (pytest_configure / the CLI's start), and only where
the user has not set the variable already. Every run reports the outcome.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GuideSetting:
    name: str
    value: str
    apply: bool
    why: str


GUIDE_SETTINGS = (
    GuideSetting(
        "PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512,garbage_collection_threshold:0.9", True,
        "limits fragmentation when the suite builds and frees a 23 GB transformer per stack",
    ),
    GuideSetting(
        "CUDA_MODULE_LOADING", "LAZY", True,
        "loads kernels on first use; already PyTorch's default, set explicitly so it is reported",
    ),
    GuideSetting(
        "TORCH_CUDA_ARCH_LIST", "9.0", False,
        "only affects building C++/CUDA extensions from source, not inference",
    ),
    GuideSetting(
        "CUBLAS_WORKSPACE_CONFIG", ":4096:8", False,
        "a cuBLAS determinism knob, not a speed-up; outputs here are compared by SSIM, not bit-exactly",
    ),
    GuideSetting(
        "TORCH_CUDNN_V8_API_ENABLED", "1", False,
        "obsolete: the cuDNN v8 API is the only one in PyTorch >= 2.0",
    ),
    GuideSetting(
        "TRITON_PTXAS_PATH", "/usr/local/cuda/bin/ptxas", False,
        "Triton ships a ptxas matching its compiler; another one can break compilation",
    ),
    GuideSetting(
        "TRITON_CUBIN_PATH", "/usr/local/cuda/bin/cubin", False,
        "not a variable Triton reads",
    ),
)


def apply_guide_environment(environ: MutableMapping[str, str] | None = None) -> list[dict]:
    """Set the settings worth applying (never overriding the user); return what happened."""
    environ = os.environ if environ is None else environ
    report = []
    for setting in GUIDE_SETTINGS:
        before = environ.get(setting.name)
        applied = setting.apply and before is None
        if applied:
            environ[setting.name] = setting.value
        if applied:
            status = "applied"
        elif before is not None:
            status = "user-set"
        else:
            status = "not applied"
        report.append({**asdict(setting), "status": status, "value_in_effect": environ.get(setting.name)})
    return report
