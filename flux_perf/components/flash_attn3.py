"""FlashAttention-3 (Hopper) inside diffusers' attention dispatch, from whichever FA3 build is
installed: flash-attn's `hopper/` source build (`flash_attn_interface`) or the forward-only
`fa3-fwd` wheel (`fa3_fwd_interface`, pip-installable; loads under torch 2.11 on the H100).

diffusers' own `_flash_3` backend imports `flash_attn_interface` only, so the kernel is served
through a borrowed slot (local_attention.py), as a torch custom op that torch.compile keeps in
its graph. bf16 only here: FA3's FP8 path measured 3-5 % slower than cuDNN FP8 at 5120 and 8704
tokens (docs/fast-stack.md), so no FP8 variant is offered.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from .base import Capabilities
from .local_attention import LocalAttentionKernel, flash_attention_op, plain_dispatch

OP_NAME = "flux_perf::flash_attn_3"
MODULES = ("flash_attn_interface", "fa3_fwd_interface")  # preference order


def installed_module() -> str | None:
    """The first FA3 interface module that can be found, without importing it."""
    for name in MODULES:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


def _interface():
    """The FA3 module, looked up in sys.modules first: this runs at every attention call."""
    for name in MODULES:
        if name in sys.modules:
            return sys.modules[name]
    return importlib.import_module(installed_module() or MODULES[-1])


flash_attn_3 = flash_attention_op(OP_NAME, lambda: _interface().flash_attn_func)
fa3_dispatch = plain_dispatch(flash_attn_3, "attn-fa3")


class FlashAttn3(LocalAttentionKernel):
    name = "attn-fa3"
    summary = ("FlashAttention-3 for Hopper (flash-attn's hopper build or the fa3-fwd wheel), "
               "in diffusers' dispatch")
    lossless = True
    min_capability = (9, 0)  # FA3's kernels are Hopper's (sm90)
    slot_name = "_FLASH_3_HUB"  # diffusers' hub variant of FA3: no hub is reachable here
    kernel = "flashattention-3"
    dispatch = staticmethod(fa3_dispatch)

    def extra_unmet(self, caps: Capabilities) -> str | None:
        if not any(caps.has_package(name) for name in MODULES):
            return ("attn-fa3 needs FlashAttention-3: pip install fa3-fwd (forward only), or build "
                    "flash-attn's hopper/ folder; neither flash_attn_interface nor fa3_fwd_interface is installed")
        return None

    def report(self) -> dict:
        return {**super().report(), "module": installed_module()}
