"""The optimization components, one module each, and the stacks built from them (stacks.py).
Every component module of this package is imported here, and each component class registers
itself: a new component is one new file."""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Capabilities, Component, ComponentError, Phase


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


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "stacks"):
        importlib.import_module(f"{__name__}.{_module.name}")


__all__ = ["REGISTRY", "Capabilities", "Component", "ComponentError", "Phase", "UnknownComponentError",
           "make_component"]
