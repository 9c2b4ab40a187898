"""FlashAttention-4 (the flash-attn-4 package: CuTe DSL kernels for Hopper and Blackwell,
`flash_attn.cute`) inside diffusers' attention dispatch.

diffusers 0.42 knows FA4 only as `flash_4_hub`, a kernel fetched from the Hugging Face hub at
run time through the `kernels` package; no machine of this suite can reach a hub. This component
serves that dispatch slot from the locally installed package instead (local_attention.py). The
kernel runs as a torch custom op, so torch.compile keeps it inside the compiled graph instead of
breaking the graph at every attention call.
"""

from __future__ import annotations

from .local_attention import LocalAttentionKernel, flash_attention_op, plain_dispatch

OP_NAME = "flux_perf::flash_attn_4"


def _flash_attn_func():
    from flash_attn.cute import flash_attn_func

    return flash_attn_func


flash_attn_4 = flash_attention_op(OP_NAME, _flash_attn_func)
fa4_dispatch = plain_dispatch(flash_attn_4, "attn-fa4")


class FlashAttn4(LocalAttentionKernel):
    name = "attn-fa4"
    summary = "FlashAttention-4 from the local flash-attn-4 package (flash_attn.cute), in diffusers' dispatch"
    lossless = True
    min_capability = (9, 0)  # FA4's kernels are for Hopper (sm90) and Blackwell (sm100)
    packages = ("flash_attn.cute",)
    slot_name = "FLASH_4_HUB"  # diffusers' own name for FA4, fetched from the hub there
    kernel = "flash-attn-4"
    dispatch = staticmethod(fa4_dispatch)
