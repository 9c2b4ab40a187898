"""What the attention kernels the suite serves itself (FA4, cuDNN FP8) share: a slot in diffusers'
attention dispatch, and a component that points every attention processor at it.

diffusers' backend names are a closed Enum, so a local kernel borrows the slot of a backend no
machine of this suite can use (the `*_hub` ones fetch kernels from a hub none can reach), and is
set on the processors directly: `set_attention_backend` would insist on the hub's `kernels` package.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Component, Phase
from .layers import attention_modules


@dataclass(frozen=True)
class BorrowedSlot:
    """A diffusers dispatch slot served by a local kernel, and what the slot held before, to give
    back: diffusers' registry is process-wide, and the next stack must find the slot as it was."""

    slot: object  # the AttentionBackendName member
    backend: Callable | None  # None: the slot was not registered
    arg_names: set | None
    constraints: list | None

    def restore(self) -> None:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

        for table, held in ((registry._backends, self.backend), (registry._supported_arg_names, self.arg_names),
                            (registry._constraints, self.constraints)):
            if held is None:
                table.pop(self.slot, None)
            else:
                table[self.slot] = held


def serve_slot(slot_name: str, dispatch: Callable) -> BorrowedSlot:
    """Make diffusers' dispatch slot `slot_name` call `dispatch`; return the slot with what it held."""
    from diffusers.models.attention_dispatch import AttentionBackendName
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

    slot = AttentionBackendName[slot_name]
    borrowed = BorrowedSlot(slot, registry._backends.get(slot), registry._supported_arg_names.get(slot),
                            registry._constraints.get(slot))
    registry._backends[slot] = dispatch
    # The dispatcher passes only the argument names the backend declares.
    registry._supported_arg_names[slot] = set(inspect.signature(dispatch).parameters)
    registry._constraints[slot] = []  # the borrowed backend's own checks do not apply
    return borrowed


def set_processor_backend(transformer, slot) -> int:
    """What `set_attention_backend` does once its checks pass: every attention processor uses `slot`."""
    count = 0
    for module in attention_modules(transformer):
        module.processor._attention_backend = slot
        count += 1
    return count


def plain_dispatch(op: Callable, component: str) -> Callable:
    """A diffusers backend for a kernel `op(query, key, value, scale)` that serves plain non-causal
    attention: diffusers' backend signature (its dispatcher passes only the names one declares)."""

    def dispatch(query, key, value, attn_mask=None, scale: float | None = None, is_causal: bool = False,
                 return_lse: bool = False, _parallel_config=None):
        if attn_mask is not None or is_causal or return_lse or _parallel_config is not None:
            raise ValueError(f"{component} serves plain non-causal attention only: no mask, causal, lse or "
                             "context parallel")
        return op(query, key, value, scale if scale is not None else query.shape[-1] ** -0.5)

    return dispatch


def flash_attention_op(op_name: str, flash_attn_func: Callable[[], Callable]):
    """A FlashAttention build's `flash_attn_func` (looked up at each call) as the torch custom op
    `op_name` on (batch, tokens, heads, head_dim) tensors, non-causal, so torch.compile keeps the
    kernel inside its graph instead of breaking the graph at every attention call."""

    def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        out = flash_attn_func()(query, key, value, softmax_scale=scale, causal=False)
        return out[0] if isinstance(out, (tuple, list)) else out  # some builds return (out, lse)

    op = torch.library.custom_op(op_name, attention, mutates_args=())
    op.register_fake(lambda query, key, value, scale: query.new_empty(*query.shape[:-1], value.shape[-1]))
    return op


class LocalAttentionKernel(Component):
    """An attention kernel served from a locally installed package through a borrowed slot."""

    exclusive = "attention"
    phase = Phase.ATTENTION
    needs_cuda = True
    slot_name: ClassVar[str]  # the borrowed AttentionBackendName member
    kernel: ClassVar[str]  # what report() names

    def __init__(self, param: str | None = None):
        super().__init__(param)
        self.processors = 0
        self.borrowed: BorrowedSlot | None = None

    @staticmethod
    def dispatch(*args, **kwargs):
        raise NotImplementedError

    def apply(self, pipe) -> None:
        self.borrowed = serve_slot(self.slot_name, type(self).dispatch)
        self.processors = set_processor_backend(pipe.transformer, self.borrowed.slot)
        if not self.processors:
            raise RuntimeError(f"{self.name} found no attention processor with a dispatch backend to set")

    def release(self, pipe) -> None:
        if self.borrowed is not None:
            self.borrowed.restore()
            self.borrowed = None

    def report(self) -> dict:
        return {"kernel": self.kernel, "attention_processors": self.processors}
