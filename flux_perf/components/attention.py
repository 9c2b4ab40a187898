"""Attention kernels, through diffusers' own attention backends (`set_attention_backend`);
FlashAttention-4 through the same dispatch, served locally (flash_attn4.py)."""

from __future__ import annotations

import os
from typing import ClassVar

from .base import Capabilities, Component, Phase
from .flash_attn3 import MODULES as FA3_MODULES


class AttentionBackend(Component):
    exclusive = "attention"
    phase = Phase.ATTENTION
    lossless = True
    backend: ClassVar[str]

    def __init__(self, param: str | None = None):
        super().__init__(param)
        # `set_attention_backend` also makes its backend diffusers' process-wide default (every
        # model built later uses it): the default found before, for `release` to put back.
        self.found_default = None

    def apply(self, pipe) -> None:
        self.set_backend(pipe, self.backend)

    def set_backend(self, pipe, backend: str) -> None:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        if self.found_default is None:
            self.found_default = _AttentionBackendRegistry._active_backend
        pipe.transformer.set_attention_backend(backend)

    def release(self, pipe) -> None:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        if self.found_default is not None:
            _AttentionBackendRegistry.set_active_backend(self.found_default)
            self.found_default = None


class SdpaAttention(AttentionBackend):
    name = "attn-sdpa"
    summary = "PyTorch SDPA, PyTorch picks the kernel (diffusers 'native')"
    backend = "native"


class CudnnAttention(AttentionBackend):
    name = "attn-cudnn"
    summary = "cuDNN SDPA kernel (diffusers '_native_cudnn'); fastest bf16 attention measured on H100"
    backend = "_native_cudnn"
    needs_cuda = True
    min_capability = (8, 0)


class FlashSdpaAttention(AttentionBackend):
    name = "attn-flash-sdpa"
    summary = "PyTorch's built-in FlashAttention-2 SDPA kernel (diffusers '_native_flash')"
    backend = "_native_flash"
    needs_cuda = True
    min_capability = (8, 0)


class EfficientSdpaAttention(AttentionBackend):
    name = "attn-efficient"
    summary = "PyTorch's memory-efficient SDPA kernel (diffusers '_native_efficient')"
    backend = "_native_efficient"
    needs_cuda = True


class FlashAttn(AttentionBackend):
    """The flash-attn family's best kernel installed for this GPU. On Hopper that is FA3 (a
    source build of flash-attn's hopper folder, or `pip install fa3-fwd`) or FA4 (`pip install flash-attn-4`);
    FlashAttention-2 elsewhere. `report()` names the one that ran."""

    name = "attn-flash-attn"
    summary = "flash-attn's kernel for this GPU: FA3 or FA4 on Hopper and newer, else FlashAttention-2"
    needs_cuda = True
    min_capability = (8, 0)

    def __init__(self, param: str | None = None):
        super().__init__(param)
        self.kernel: str | None = None
        self.delegate: Component | None = None

    @staticmethod
    def pick(caps: Capabilities) -> str | None:
        hopper = caps.capability is not None and caps.capability >= (9, 0)
        if hopper and any(caps.has_package(name) for name in FA3_MODULES):
            return "fa3"
        if hopper and caps.has_package("flash_attn.cute"):
            return "fa4"
        if caps.has_package("flash_attn.flash_attn_interface"):
            return "fa2"
        return None

    def extra_unmet(self, caps: Capabilities) -> str | None:
        if self.pick(caps) is None:
            return ("attn-flash-attn needs a flash-attn kernel: FA4 (pip install flash-attn-4) or FA3 on Hopper, "
                    "FlashAttention-2 (flash-attn) elsewhere; none is installed here")
        return None

    def apply(self, pipe) -> None:
        from .flash_attn3 import FlashAttn3
        from .flash_attn4 import FlashAttn4

        caps = Capabilities.detect(str(next(pipe.transformer.parameters()).device))
        self.kernel = self.pick(caps)
        if self.kernel in ("fa3", "fa4"):
            self.delegate = FlashAttn3() if self.kernel == "fa3" else FlashAttn4()
            self.delegate.apply(pipe)
        elif self.kernel == "fa2":
            self.set_backend(pipe, "flash")
        else:
            raise RuntimeError(self.extra_unmet(caps))

    def release(self, pipe) -> None:
        if self.delegate is not None:
            self.delegate.release(pipe)
        super().release(pipe)

    def report(self) -> dict:
        return {"kernel": self.kernel, **(self.delegate.report() if self.delegate else {})}


def restore_default_backend(pipe) -> None:
    """diffusers keeps the last backend set on *any* model as a process-wide default, which a
    freshly built model then silently uses (seen: stacks after `attn-efficient` ran 55 % slower
    at 1024). Setting the default explicitly on each new pipeline resets that global too."""
    pipe.transformer.set_attention_backend(os.environ.get("DIFFUSERS_ATTN_BACKEND", "native"))

