"""Stacks: named, ordered sets of components. `bf16` is the empty stack (eager bf16).

A stack is written as a named stack, a component, or several of either joined by
`+` (`compile+fp8-torchao`, `fp8+fbc:0.2`). Components are applied in phase order,
so `fp8-torchao+compile-regional` and `compile-regional+fp8-torchao` are the same stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import REGISTRY, Capabilities, Component, ComponentError, make_component
from .attention import restore_default_backend
from ..model.scenarios import Scenario

BASELINE = "bf16"

# Runs one calibration generation: (scenario, call contexts of the components applied so far).
Calibrate = Callable[[Scenario, list], None]

NAMED_STACKS: dict[str, tuple[str, ...]] = {
    BASELINE: (),  # eager bf16 with PyTorch's default SDPA: the fidelity reference
    "cudnn": ("attn-cudnn",),
    "flash-sdpa": ("attn-flash-sdpa",),
    "compile": ("attn-cudnn", "compile-regional"),
    "graphs": ("attn-cudnn", "compile-regional", "cuda-graphs"),
    "fp8": ("attn-cudnn", "fp8-torchao", "compile-regional"),
    "fp8+fbc": ("attn-cudnn", "fp8-torchao", "compile-regional", "fbc"),
    # The fastest stack from compute alone (issues 7 and 17; docs/fast-stack.md has the measurements).
    # Its attention is cuDNN's FP8 kernel (8.7 % faster at 1024x1024@8 than the bf16 one); the
    # attention's and the linears' FP8 scales are static, calibrated on one generation at build; RoPE
    # rotates contiguous halves (exact; -1.2 % at 1024x1024@8, tenth session).
    "fast": ("attn-fp8:static", "fused-qkv", "rope-halves", "fp8-static", "compile-regional", "cuda-graphs",
             "vae-channels-last", "vae-compile"),
    # `fast` with per-call FP8 scales (per-tensor attention, per-row linears), as it was before.
    "fast-dynamic": ("attn-fp8", "fused-qkv", "fp8-torchao", "compile-regional", "cuda-graphs",
                     "vae-channels-last", "vae-compile"),
    # `fast` as it was before issue 17, with bf16 attention: where nvidia-cudnn-frontend is missing.
    "fast-bf16attn": ("attn-cudnn", "fused-qkv", "fp8-torchao", "compile-regional", "cuda-graphs",
                      "vae-channels-last", "vae-compile"),
    # TaylorSeer on `fast` (opt-in, lossy): fewer transformer steps, without CUDA graphs, which cannot replay
    # its host-side step decision. Reported as its own stack, judged against bf16 like any other.
    "fast+taylorseer": ("attn-fp8:static", "fused-qkv", "rope-halves", "fp8-static", "compile-regional", "taylorseer",
                        "vae-channels-last", "vae-compile"),
    # First Block Cache on top, reported apart: CUDA graphs cannot replay its host-side decision.
    "fast+fbc": ("attn-cudnn", "fused-qkv", "fp8-torchao", "compile-regional", "fbc",
                 "vae-channels-last", "vae-compile"),
}

DEFAULT_STACKS = (BASELINE, "compile", "fp8", "fast")
# A name must mean one thing: a stack never shadows a component.
assert not set(NAMED_STACKS) & set(REGISTRY), set(NAMED_STACKS) & set(REGISTRY)


class StackError(ComponentError):
    pass


@dataclass(frozen=True)
class Stack:
    name: str
    components: tuple[Component, ...]

    @property
    def key(self) -> str:
        """Canonical spelling: the same components give the same key."""
        return "+".join(c.spec for c in self.components) or BASELINE

    @property
    def lossless(self) -> bool:
        return all(c.lossless for c in self.components)

    @property
    def linear_precision(self) -> str:
        """The linear layers' number format (the matmul ceiling a step is held to): the first
        component that sets one, else bf16."""
        return next((c.linear_precision for c in self.components if c.linear_precision), "bf16")

    def release(self, pipe) -> None:
        """Undo what the components changed outside `pipe` (borrowed registry slots, caches), last applied first."""
        for component in reversed(self.components):
            component.release(pipe)

    def fresh(self) -> Stack:
        """New component instances (components keep per-pipeline state)."""
        return Stack(self.name, tuple(type(c)(c.param) for c in self.components))

    def unmet(self, caps: Capabilities) -> str | None:
        for component in self.components:
            reason = component.unmet(caps)
            if reason:
                return reason
        return None

    def apply(self, pipe, calibrate: Calibrate | None = None) -> None:
        """Apply every component in phase order. Components that calibrate (static FP8 scales) get
        their generations run by `calibrate(scenario, call_contexts)` once, right after the last of
        them is applied: on the pipeline as it will run, before compile and CUDA graphs see it."""
        restore_default_backend(pipe)  # every stack starts from diffusers' default attention
        scenarios = {c: s for c in self.components if (s := c.calibration_scenario()) is not None}
        if scenarios and calibrate is None:
            raise StackError(f"{next(iter(scenarios)).spec} calibrates on one generation: build the stack "
                             "through the case runner, which runs it")
        for index, component in enumerate(self.components):
            component.apply(pipe)
            if scenarios and component is list(scenarios)[-1]:
                contexts = [f for f in (c.call_context(pipe) for c in self.components[:index + 1]) if f is not None]
                for scenario in dict.fromkeys(scenarios.values()):
                    calibrate(scenario, contexts)  # one generation serves every component asking for it
                for waiting in scenarios:
                    waiting.after_calibration(pipe)

    def call_contexts(self, pipe) -> list:
        return [f for f in (c.call_context(pipe) for c in self.components) if f is not None]

    def prompt_tokens(self) -> int | str | None:
        return next((t for t in (c.prompt_tokens() for c in self.components) if t is not None), None)

    def adjust(self, scenario: Scenario) -> Scenario:
        for component in self.components:
            scenario = component.adjust_scenario(scenario)
        return scenario

    def report(self) -> dict:
        return {c.spec: info for c in self.components if (info := c.report())}

    def reset_reports(self) -> None:
        for component in self.components:
            component.reset_report()

    def describe(self) -> str:
        return " + ".join(c.spec for c in self.components) or "eager bf16, default SDPA"


def _expand(text: str, seen: tuple[str, ...] = ()) -> list[Component]:
    if text in NAMED_STACKS:
        return [make_component(spec) for spec in NAMED_STACKS[text]]
    parts = [p.strip() for p in text.split("+")]
    if len(parts) == 1:
        name = parts[0].partition(":")[0]
        if name in REGISTRY:
            return [make_component(parts[0])]
        raise StackError(
            f"unknown stack or component {text!r}; named stacks: {', '.join(NAMED_STACKS)}; "
            f"components: {', '.join(sorted(REGISTRY))}"
        )
    components: list[Component] = []
    for part in parts:
        if not part:
            raise StackError(f"empty component in stack {text!r}")
        components.extend(_expand(part))
    return components


def check_conflicts(components: list[Component], text: str) -> None:
    groups: dict[str, Component] = {}
    for component in components:
        if component.exclusive:
            other = groups.setdefault(component.exclusive, component)
            if other is not component:
                raise StackError(
                    f"stack {text!r} has two {component.exclusive} components, "
                    f"{other.spec} and {component.spec}: keep one"
                )
    for component in components:
        for other in components:
            hits = ({other.name} | set(other.tags)) & set(component.conflicts_with)
            if other is not component and hits:
                raise StackError(
                    f"stack {text!r}: {component.spec} cannot be combined with {other.spec} "
                    f"({component.spec} conflicts with {', '.join(sorted(hits))})"
                )


def compose(name: str, components) -> Stack:
    """A stack of these components under `name`: each once, in phase order, conflicts refused."""
    unique: dict[str, Component] = {}
    for component in components:
        unique.setdefault(component.spec, component)
    ordered = sorted(unique.values(), key=lambda c: c.phase)
    check_conflicts(ordered, name)
    return Stack(name, tuple(ordered))


def parse_stack(text: str) -> Stack:
    text = text.strip()
    if not text:
        raise StackError("empty stack name")
    return compose(text, _expand(text))


def baseline_first(stacks: tuple[Stack, ...]) -> tuple[Stack, ...]:
    """The stacks of a sanctioned update: bf16 always, first, since every other stack's fidelity is
    measured against the bf16 image it records."""
    if any(s.name == BASELINE for s in stacks):
        return (*[s for s in stacks if s.name == BASELINE], *[s for s in stacks if s.name != BASELINE])
    return (parse_stack(BASELINE), *stacks)


def parse_stacks(text: str | None) -> tuple[Stack, ...]:
    """Comma-separated stacks; None gives the default set. A text naming none is an error, not the
    defaults: an unset `--stacks "$STACKS"` must not re-record every stack. A stack named twice
    (or two names for the same components) would time one build as two cases."""
    if text is None:
        return tuple(parse_stack(name) for name in DEFAULT_STACKS)
    stacks = tuple(parse_stack(part) for part in text.split(",") if part.strip())
    if not stacks:
        raise StackError(f"no stack in {text!r}: name one or more, e.g. bf16,fast")
    seen: dict[tuple[str, ...], str] = {}
    for stack in stacks:
        specs = tuple(c.spec for c in stack.components)
        if specs in seen:
            same = "is named twice" if seen[specs] == stack.name else f"is the same stack as {seen[specs]!r}"
            raise StackError(f"stack {stack.name!r} {same} in {text!r}: name each stack once")
        seen[specs] = stack.name
    return stacks
