"""What the attention kernels the suite serves itself (FA4, cuDNN FP8) share: a slot in diffusers'
attention dispatch, and a component that points every attention processor at it.

diffusers' backend names are a closed Enum, so a local kernel borrows the slot of a backend no
machine of this suite can use (the `*_hub` ones fetch kernels from a hub none can reach), and is
set on the processors directly: `set_attention_backend` would insist on the hub's `kernels` package.
"""

from __future__ import annotations

import inspect
from typing import Callable, ClassVar

from .base import Component, Phase
from .layers import attention_modules


def serve_slot(slot_name: str, dispatch: Callable):
    """Make diffusers' dispatch slot `slot_name` call `dispatch`; return the slot."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    slot = AttentionBackendName[slot_name]
    _AttentionBackendRegistry._backends[slot] = dispatch
    # The dispatcher passes only the argument names the backend declares.
    _AttentionBackendRegistry._supported_arg_names[slot] = set(inspect.signature(dispatch).parameters)
    _AttentionBackendRegistry._constraints[slot] = []  # the borrowed backend's own checks do not apply
    return slot


def set_processor_backend(transformer, slot) -> int:
    """What `set_attention_backend` does once its checks pass: every attention processor uses `slot`."""
    count = 0
    for module in attention_modules(transformer):
        module.processor._attention_backend = slot
        count += 1
    return count


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

    @staticmethod
    def dispatch(*args, **kwargs):
        raise NotImplementedError

    def apply(self, pipe) -> None:
        self.processors = set_processor_backend(pipe.transformer, serve_slot(self.slot_name, type(self).dispatch))
        if not self.processors:
            raise RuntimeError(f"{self.name} found no attention processor with a dispatch backend to set")

    def report(self) -> dict:
        return {"kernel": self.kernel, "attention_processors": self.processors}
