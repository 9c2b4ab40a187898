"""What every optimization component declares, and the machine it is checked against."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

import torch

from ..model.scenarios import Scenario


class ComponentError(ValueError):
    """A component or stack that cannot be built as written."""


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers; components say which parts of it they need."""

    device: str  # "cuda" or "cpu"
    capability: tuple[int, int] | None = None
    gpu_name: str | None = None
    gpu_count: int = 0
    world_size: int = 1

    @classmethod
    def detect(cls, device: str = "cuda") -> Capabilities:
        kind = torch.device(device).type
        world = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
        if kind == "cuda" and torch.cuda.is_available():
            index = torch.device(device).index or 0
            return cls(
                "cuda",
                torch.cuda.get_device_capability(index),
                torch.cuda.get_device_name(index),
                torch.cuda.device_count(),
                world,
            )
        return cls("cpu", world_size=world)

    @staticmethod
    def has_package(import_name: str) -> bool:
        try:
            return importlib.util.find_spec(import_name) is not None
        except (ImportError, ValueError):
            return False


ContextFactory = Callable[[], AbstractContextManager]


class Phase(IntEnum):
    """When a component is applied: stacks apply in this order, whatever order the user wrote.
    Quantization swaps modules before compile traces them; CUDA graphs capture what is compiled."""

    SCHEDULE = 0  # steps, guidance, solvers: change the scenario or the scheduler only
    INSTRUMENT = 1  # test-only hooks that must see every transformer call
    NUMERICS = 5  # global math switches (TF32)
    ATTENTION = 10
    FUSION = 20  # fused projections, before quantization sees the fused linears
    QUANTIZATION = 30
    CACHE = 40  # step caching hooks
    LAYOUT = 50  # memory format, tiling, slicing
    PARALLEL = 55  # context parallel hooks, traced with the blocks
    COMPILER_SETTINGS = 59
    COMPILE = 60
    VAE_COMPILE = 61
    GRAPHS = 70  # captures whatever the earlier phases built
    OFFLOAD = 90


# What components that calibrate (static FP8 scales) run by default: the largest built-in scenario,
# with another noise draw than the measured one (seed 0), on the suite's prompt and reference image.
CALIBRATION_SCENARIO = "1024x1024@8-s1"

# Every concrete component (a subclass that sets `name`) registers itself here on definition.
REGISTRY: dict[str, type[Component]] = {}


class Component:
    """One optimization. Subclasses set the class attributes and override what they need;
    defining a subclass with a `name` registers it (pass `register=False` for test doubles)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # Expected to leave the output as bf16 eager gives it (up to kernel rounding).
    lossless: ClassVar[bool] = True
    phase: ClassVar[Phase] = Phase.LAYOUT
    needs_cuda: ClassVar[bool] = False
    min_capability: ClassVar[tuple[int, int] | None] = None
    packages: ClassVar[tuple[str, ...]] = ()  # import names
    # At most one component of each exclusive group in a stack (two attention backends...).
    exclusive: ClassVar[str | None] = None
    # The number format the component runs the transformer's linear layers in ("fp8"), None when it
    # leaves them alone: the report picks the matmul ceiling of a stack from it.
    linear_precision: ClassVar[str | None] = None
    # A planted break or instrument that proves the gates (noise, slow-down), not an optimization.
    test_only: ClassVar[bool] = False
    # Properties other components may refuse to be stacked with.
    tags: ClassVar[frozenset[str]] = frozenset()
    # Names or tags of components this one cannot be stacked with.
    conflicts_with: ClassVar[frozenset[str]] = frozenset()
    # Parameter: None means the component takes none.
    default_param: ClassVar[str | None] = None

    def __init_subclass__(cls, register: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        if register and "name" in cls.__dict__:
            if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
                raise ComponentError(f"two components named {cls.name!r}: {REGISTRY[cls.name]} and {cls}")
            REGISTRY[cls.name] = cls

    def __init__(self, param: str | None = None):
        if param is not None and self.default_param is None:
            raise ComponentError(f"component {self.name!r} takes no parameter, got {self.name}:{param}")
        self.param = param if param is not None else self.default_param
        self.validate_param()

    def validate_param(self) -> None:
        """Raise ComponentError naming a bad parameter."""

    @property
    def spec(self) -> str:
        if self.param is None or self.param == self.default_param:
            return self.name
        return f"{self.name}:{self.param}"

    def __repr__(self) -> str:
        return f"<component {self.spec}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Component) and (self.name, self.param) == (other.name, other.param)

    def __hash__(self) -> int:
        return hash((self.name, self.param))

    # -- requirements -------------------------------------------------------
    def unmet(self, caps: Capabilities) -> str | None:
        """Why this component cannot run here, or None."""
        if (self.needs_cuda or self.min_capability) and caps.device != "cuda":
            return f"{self.spec} needs a CUDA GPU (running on {caps.device})"
        if self.min_capability and caps.capability and caps.capability < self.min_capability:
            need = ".".join(map(str, self.min_capability))
            have = ".".join(map(str, caps.capability))
            return f"{self.spec} needs compute capability >= {need}; {caps.gpu_name} has {have}"
        missing = [p for p in self.packages if not caps.has_package(p)]
        if missing:
            return f"{self.spec} needs the Python package(s) {', '.join(missing)}, not installed here"
        return self.extra_unmet(caps)

    def extra_unmet(self, caps: Capabilities) -> str | None:
        return None

    # -- effect -------------------------------------------------------------
    def apply(self, pipe) -> None:
        """Change the pipeline; components that only adjust the scenario or wrap calls leave it."""

    def calibration_scenario(self) -> Scenario | None:
        """A component that learns from one generation (static FP8 scales) names its scenario here;
        the stack runs it once every calibrating component is applied (before compile and CUDA
        graphs), then calls `after_calibration`."""
        return None

    def after_calibration(self, pipe) -> None:
        """Use what the calibration generation showed (e.g. turn observers into fixed scales)."""

    def call_context(self, pipe) -> ContextFactory | None:
        """A context entered around every generation, if the component needs one."""
        return None

    def adjust_scenario(self, scenario: Scenario) -> Scenario:
        return scenario

    def prompt_tokens(self) -> int | str | None:
        """How many T5 tokens the prompt is encoded to ("auto": its own length, rounded up);
        None leaves the pipeline's 512."""
        return None

    def report(self) -> dict:
        """What the component saw while running (e.g. cache hit rate)."""
        return {}

    def reset_report(self) -> None:
        """Start counting afresh (a new scenario on the same pipeline)."""

    def release(self, pipe) -> None:
        """Undo what `apply` changed outside `pipe` itself (a borrowed diffusers registry slot, a
        process-wide default, module-level caches), so that the next stack starts from what this one
        found. Called once the pipeline is done with, in the reverse order of `apply`; it must be safe
        on a component that was never applied, and to call twice."""


class Float8Component(Component):
    """What every FP8 linear-layer backend shares: one linear quantizer per stack, lossy,
    Ada/Hopper tensor cores."""

    exclusive = "linear quantizer"
    linear_precision = "fp8"
    phase = Phase.QUANTIZATION
    lossless = False
    needs_cuda = True
    min_capability = (8, 9)


def parse_float_param(component: Component, low: float, high: float) -> float:
    try:
        value = float(component.param)
    except (TypeError, ValueError):
        raise ComponentError(f"{component.name}:{component.param}: parameter must be a number") from None
    if not low <= value <= high:
        raise ComponentError(f"{component.name}:{component.param}: parameter must be in [{low}, {high}]")
    return value


def parse_choice_param(component: Component, choices: tuple[str, ...]) -> str:
    if component.param not in choices:
        raise ComponentError(
            f"{component.name}:{component.param}: unknown option; choose one of {', '.join(choices)}"
        )
    return component.param
