"""The registry of optimization components, one module each."""

from __future__ import annotations

from . import (
    attention,
    compile,
    context_parallel,
    cuda_graphs,
    first_block_cache,
    fp8_scaled_mm,
    fp8_torchao,
    fp8_transformer_engine,
    fused_qkv,
    memory,
    scheduler,
    slowdown,
    tensorrt,
    vae,
)
from .base import Capabilities, Component, ComponentError

_MODULES = (attention, fused_qkv, compile, cuda_graphs, fp8_torchao, fp8_scaled_mm, fp8_transformer_engine,
            first_block_cache, scheduler, tensorrt, vae, memory, context_parallel, slowdown)

REGISTRY: dict[str, type[Component]] = {cls.name: cls for module in _MODULES for cls in module.COMPONENTS}


class UnknownComponentError(ComponentError):
    pass


def make_component(spec: str) -> Component:
    """`name` or `name:param`, e.g. `fbc:0.12`, `compile:max-autotune`."""
    name, _, param = spec.strip().partition(":")
    if name not in REGISTRY:
        raise UnknownComponentError(
            f"unknown component {name!r}; known components: {', '.join(sorted(REGISTRY))}"
        )
    return REGISTRY[name](param or None)


__all__ = ["REGISTRY", "Capabilities", "Component", "ComponentError", "UnknownComponentError", "make_component"]
