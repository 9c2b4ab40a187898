"""RoPE on contiguous halves: Q and K's head dimension permuted in the weights, exact.

FLUX rotates interleaved pairs (0, 1), (2, 3), ... of each 128-wide head. Under torch.compile the
kernel that makes Q and K (RMSNorm, RoPE and, in `fast`, the FP8 cast) reads each value by parity
through masked stride-2 loads, and ran at about 2.5x its memory-bound time (docs/fast-stack.md).
Permuting every head's dimensions to (0, 2, 4, ..., 1, 3, 5, ...) in the Q and K projections (and
their RMSNorm weights) puts pair i at (i, i + 64): the rotation then works on contiguous halves.
Q . K is a sum over the head dimension, so the same permutation of both changes no attention score;
V and the output are untouched. Exact up to the order of float sums (RMSNorm's mean, Q . K).
"""

from __future__ import annotations

import torch

from .base import Component, Phase
from .flux_processor import flux_processor_class
from .layers import attention_modules

# (projection, how many of its rows belong to Q and K: the fused ones hold Q, K, V in that order)
_PROJECTIONS = (("to_q", 1), ("to_k", 1), ("add_q_proj", 1), ("add_k_proj", 1), ("to_qkv", 2), ("to_added_qkv", 2))
_NORMS = ("norm_q", "norm_k", "norm_added_q", "norm_added_k")


def halves_order(head_dim: int) -> torch.Tensor:
    """Where each new position of a head reads from: the even dimensions, then the odd ones."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def rope_in_halves(freqs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """FLUX's (cos, sin), each repeated per interleaved pair ([c0, c0, c1, c1, ...]), for contiguous
    halves ([c0, c1, ..., c0, c1, ...])."""
    return tuple(torch.cat([t[..., 0::2], t[..., 0::2]], dim=-1) for t in freqs)


@torch.no_grad()
def _permute_rows(linear: torch.nn.Linear, order: torch.Tensor, blocks: int) -> None:
    """Permute the first `blocks` head-sized groups of output rows of `linear`, each by `order`."""
    head_dim = order.numel()
    rows = torch.arange(linear.out_features, device=linear.weight.device)
    span = linear.out_features // (3 if blocks == 2 else 1)  # rows of Q (and K) in a fused projection
    heads = span * blocks // head_dim
    grouped = rows[:span * blocks].view(heads, head_dim)[:, order.to(rows.device)].flatten()
    rows = torch.cat([grouped, rows[span * blocks:]])
    linear.weight.copy_(linear.weight[rows])
    if linear.bias is not None:
        linear.bias.copy_(linear.bias[rows])


class RopeHalves(Component):
    name = "rope-halves"
    summary = ("Q/K head dimension permuted in the weights so RoPE rotates contiguous halves instead of "
               "interleaved pairs (exact; the processor is FLUX's, with diffusers' halves rotation)")
    phase = Phase.FUSION  # before quantization: the FP8 linears take the permuted weights
    lossless = True

    def __init__(self, param: str | None = None):
        super().__init__(param)
        self.modules = 0
        self.hook = None

    def apply(self, pipe) -> None:
        transformer = pipe.transformer
        processor_class = flux_processor_class()
        for module in attention_modules(transformer):
            processor = module.processor
            if type(processor).__name__ == "FluxAttnProcessor":  # diffusers' own: ours does the same, with halves
                replacement = processor_class()
                replacement._attention_backend = processor._attention_backend
                replacement._parallel_config = processor._parallel_config
                module.set_processor(replacement)
                processor = replacement
            if not isinstance(processor, processor_class):
                raise RuntimeError(f"{self.name}: attention processor {type(processor).__name__} cannot rotate "
                                   "halves (it is not FLUX's processor)")
            processor.rope_halves = True
            order = halves_order(module.head_dim)
            for attr, blocks in _PROJECTIONS:
                if isinstance(getattr(module, attr, None), torch.nn.Linear):
                    _permute_rows(getattr(module, attr), order, blocks)
            for attr in _NORMS:
                norm = getattr(module, attr, None)
                if norm is not None and getattr(norm, "weight", None) is not None:
                    with torch.no_grad():
                        norm.weight.copy_(norm.weight[order.to(norm.weight.device)])
            self.modules += 1
        if not self.modules:
            raise RuntimeError(f"{self.name} found no attention module to permute")
        # One conversion of the step's (cos, sin) for every layer, outside the compiled blocks.
        self.hook = transformer.pos_embed.register_forward_hook(lambda module, args, freqs: rope_in_halves(freqs))

    def release(self, pipe) -> None:
        if self.hook is not None:
            self.hook.remove()
            self.hook = None

    def report(self) -> dict:
        return {"attention_modules": self.modules}
