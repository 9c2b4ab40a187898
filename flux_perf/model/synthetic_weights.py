"""Deterministic random weights, drawn directly on the target device.

Each tensor gets its own generator seeded from (seed, tensor name), so the same
seed gives the same weights whatever order modules are built or filled in.
The model is built on the meta device and materialised in its final dtype: a
full-size transformer never passes through a 48 GB fp32 copy.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

_NORMS = (nn.LayerNorm, nn.GroupNorm)


def tensor_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _fan_in(weight: torch.Tensor) -> int:
    # Linear (out, in) and Conv (out, in, kh, kw): everything but dim 0.
    return max(1, math.prod(weight.shape[1:]))


def _is_norm(module: nn.Module) -> bool:
    # diffusers' RMSNorm is its own class; match it by name to avoid importing internals.
    return isinstance(module, _NORMS) or type(module).__name__ in ("RMSNorm", "FP32LayerNorm")


@torch.no_grad()
def fill_deterministic(model: nn.Module, seed: int, prefix: str) -> None:
    """Initialise every parameter in place: U(-1/sqrt(fan_in), +) for weights and biases
    of linear and conv layers (PyTorch's own default bound), ones/zeros for norms."""
    device = next(model.parameters()).device
    for module_name, module in model.named_modules():
        params = dict(module.named_parameters(recurse=False))
        if not params:
            continue
        weight = params.get("weight")
        for param_name, param in params.items():
            full_name = f"{prefix}.{module_name}.{param_name}" if module_name else f"{prefix}.{param_name}"
            if _is_norm(module):
                param.fill_(1.0 if param_name == "weight" else 0.0)
                continue
            reference = weight if weight is not None and weight.dim() > 1 else param
            bound = 1.0 / math.sqrt(_fan_in(reference)) if reference.dim() > 1 else 1.0
            generator = torch.Generator(device=device).manual_seed(tensor_seed(seed, full_name))
            param.uniform_(-bound, bound, generator=generator)
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        # to_empty() leaves buffers as garbage and we cannot know how they should be set.
        raise RuntimeError(f"{prefix} has buffers this initialiser cannot fill: {buffers[:5]}")


def available_host_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_host_memory(model: nn.Module, prefix: str, device: str) -> None:
    """Refuse, by name, weights larger than the host's free memory on a CPU: the kernel's OOM killer
    would end the process with no message and no report (the full-size model is 24 GB in bf16)."""
    if torch.device(device).type != "cpu":
        return  # a GPU too small raises OutOfMemoryError, which the session reports
    needed = sum(p.numel() * p.element_size() for p in model.parameters())
    available = available_host_bytes()
    if available is not None and needed > 0.9 * available:
        dtype = next(model.parameters()).dtype
        raise MemoryError(f"the {prefix}'s weights need {needed / 2**30:.1f} GiB in {dtype} on the CPU and "
                          f"{available / 2**30:.1f} GiB of memory is free: on a CPU use --model tiny")


def build_on_device(cls, config: dict, seed: int, prefix: str, device: str, dtype: torch.dtype) -> nn.Module:
    """Construct `cls(**config)` on meta, materialise it on `device` in `dtype`, fill it."""
    with torch.device("meta"):
        model = cls(**config)
    # nn.Module.to, not diffusers' override, which warns about fp32-pinned modules FLUX does not have.
    model = nn.Module.to(model, dtype=dtype)
    check_host_memory(model, prefix, device)
    model = model.to_empty(device=device)
    fill_deterministic(model, seed, prefix)
    model.eval()
    model.requires_grad_(False)
    return model
