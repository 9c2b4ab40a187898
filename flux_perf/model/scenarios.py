"""Scenarios: what one generation is asked to do (size, steps, guidance, seed)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# The pipeline packs 2x2 latent patches after the VAE's 8x downsampling.
SIZE_MULTIPLE = 16
# Larger than any FLUX.1 checkpoint was trained for; beyond this a typo is likelier than intent.
MAX_SIDE = 4096
MAX_STEPS = 1000


class ScenarioError(ValueError):
    """A scenario value that cannot be run."""


@dataclass(frozen=True, order=True)
class Scenario:
    height: int
    width: int
    steps: int
    guidance: float = 2.5
    seed: int = 0

    def __post_init__(self) -> None:
        for side, value in (("height", self.height), ("width", self.width)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ScenarioError(f"{side} must be an integer number of pixels, got {value!r}")
            _check_side(side, value)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise ScenarioError(f"steps={self.steps!r} must be an integer from 1 to {MAX_STEPS}")
        if not isinstance(self.guidance, (int, float)) or not 0.0 <= self.guidance <= 100.0:
            raise ScenarioError(f"guidance={self.guidance!r} must be a number from 0 to 100")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ScenarioError(f"seed={self.seed!r} must be an integer from 0 to 2**63 - 1 (torch's generator seed)")

    @property
    def id(self) -> str:
        """Short, filename-safe id: `512x512@6` (guidance and seed only when not default)."""
        text = f"{self.height}x{self.width}@{self.steps}"
        if self.guidance != 2.5:
            text += f"-g{self.guidance:g}"
        if self.seed != 0:
            text += f"-s{self.seed}"
        return text

    @property
    def resolution(self) -> str:
        return f"{self.height}x{self.width}"

    def with_steps(self, steps: int) -> Scenario:
        return replace(self, steps=steps)

    def to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "steps": self.steps,
                "guidance": self.guidance, "seed": self.seed, "id": self.id}


def nearest_valid_side(value: int) -> int:
    """The multiple of 16 nearest `value` within [16, MAX_SIDE], in integers: a float would round
    a 23-digit size. A tie goes to the smaller (1000 -> 992)."""
    nearest = (value + SIZE_MULTIPLE // 2 - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE
    return min(MAX_SIDE, max(SIZE_MULTIPLE, nearest))


def _check_side(side: str, value: int) -> None:
    valid = f"multiples of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SIDE}"
    if value <= 0:
        raise ScenarioError(f"{side}={value} must be positive ({valid})")
    if value > MAX_SIDE:
        raise ScenarioError(f"{side}={value} exceeds the maximum of {MAX_SIDE} pixels "
                            f"(nearest valid: {nearest_valid_side(value)}; {valid})")
    if value % SIZE_MULTIPLE:
        raise ScenarioError(f"{side}={value} is not a multiple of {SIZE_MULTIPLE} "
                            f"(nearest valid: {nearest_valid_side(value)})")


# The guide's table (seed-guide.md, "Expected Results"); guidance 2.5 as the guide sets it.
BUILTIN = (
    Scenario(512, 512, 6),
    Scenario(768, 768, 6),
    Scenario(1024, 1024, 8),
    Scenario(512, 512, 4),
)

# Far beyond any valid value: a longer number is named by its length (Python refuses to convert
# more than 4300 digits, and a message should not print thousands).
_MAX_DIGITS = 100


def _number(digits: str, what: str, text: str) -> int:
    if len(digits.lstrip("-")) > _MAX_DIGITS:
        shown = text if len(text) <= 60 else f"{text[:40]}..."
        raise ScenarioError(f"{what} in {shown!r} is a number of {len(digits.lstrip('-'))} digits: sizes are "
                            f"multiples of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SIDE}, steps 1 to {MAX_STEPS}")
    return int(digits)


_SPEC = re.compile(
    r"^(?P<h>-?\d+)(?:x(?P<w>-?\d+))?@(?P<steps>-?\d+)"
    r"(?:-g(?P<g>\d+(?:\.\d+)?))?(?:-s(?P<seed>\d+))?$"
)


def parse_scenario(text: str) -> Scenario:
    """`512` + steps is not enough: a scenario is written `HxW@STEPS[-gGUIDANCE][-sSEED]` or `N@STEPS`."""
    match = _SPEC.match(text.strip())
    if not match:
        raise ScenarioError(
            f"cannot read scenario {text!r}: write HEIGHTxWIDTH@STEPS[-gGUIDANCE][-sSEED], e.g. 512x512@6, "
            "1024@8 or 512x512@6-g3.5-s7"
        )
    height = _number(match["h"], "height", text)
    width = _number(match["w"], "width", text) if match["w"] else height
    kwargs = {}
    if match["g"]:
        kwargs["guidance"] = float(match["g"])
    if match["seed"]:
        kwargs["seed"] = _number(match["seed"], "seed", text)
    return Scenario(height, width, _number(match["steps"], "steps", text), **kwargs)


def parse_scenarios(text: str | None) -> tuple[Scenario, ...]:
    """Comma-separated scenarios; None gives the four built-in ones, a text naming none is an error."""
    if text is None:
        return BUILTIN
    scenarios = tuple(parse_scenario(part) for part in text.split(",") if part.strip())
    if not scenarios:
        raise ScenarioError(f"no scenario in {text!r}: write HEIGHTxWIDTH@STEPS, e.g. 512x512@6,1024x1024@8")
    # Named twice (`64@1,64x64@1`), one measurement would count as two cases.
    twice = sorted({s.id for s in scenarios if scenarios.count(s) > 1})
    if twice:
        raise ScenarioError(f"scenario {', '.join(twice)} is named twice in {text!r}: name each scenario once")
    return scenarios


_RESOLUTION = re.compile(r"^(?P<h>\d+)(?:x(?P<w>\d+))?$")


def parse_resolution(text: str) -> tuple[int, int]:
    """`N` or `HxW` (the sizes are checked when the scenario is made)."""
    match = _RESOLUTION.match(str(text).strip())
    if not match:
        raise ScenarioError(f"cannot read resolution {text!r}: write N or HEIGHTxWIDTH, e.g. 512 or 768x1024")
    height = _number(match["h"], "height", text)
    return height, _number(match["w"], "width", text) if match["w"] else height
