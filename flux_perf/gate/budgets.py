"""`baselines/budgets.toml`: latency budgets and fidelity floors, edited by hand on purpose.

A key missing from the file takes the documented default below (the committed file's values), so
an empty or partial file never loosens a floor. Scenario keys are normalized (`512@6` is
`512x512@6`) and stack names stripped (`" fast"` is `fast`); two spellings of one key, or a
stack or component this flux-perf does not know, are errors naming them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class BudgetsError(ValueError):
    """budgets.toml is missing or malformed."""


# What a key missing from budgets.toml means: the committed file's values (docs/reliability.md).
DEFAULT_RELATIVE_TOLERANCE = 0.03
DEFAULT_SSIM_FLOOR = 0.9990  # lossless_default and lossy_default alike


def stack_label(name: str) -> str:
    """A stack name as budgets compare it: outer spaces and spaces around `+` dropped."""
    return "+".join(part.strip() for part in str(name).strip().split("+"))


def _lookup(table: dict, gpu: str | None, scenario_id: str, stack: str, default=None):
    """table[gpu][scenario][stack] as budgets.toml keys it (stack spelled as stack_label does)."""
    return table.get(gpu or "", {}).get(scenario_id, {}).get(stack_label(stack), default)


@dataclass(frozen=True)
class LatencyBudget:
    seconds: float
    kind: str  # "absolute" (from budgets.toml) or "relative" (recorded median x (1 + tolerance))
    source: str  # human-readable origin
    tolerance: float | None = None  # relative budgets: the slow-down that counts as a regression
    recorded_samples: tuple[float, ...] = ()  # relative budgets: the recorded run's rounds
    reference_clock_mhz: float | None = None  # relative budgets: the SM clock the reference ran at
    stale: tuple[str, ...] = ()  # relative budgets: why the recorded reference may no longer hold
    reference_s: float | None = None  # relative budgets: the recorded median

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "kind": self.kind, "source": self.source, "tolerance": self.tolerance,
                "recorded_rounds": len(self.recorded_samples), "stale": list(self.stale),
                "reference_s": self.reference_s}


@dataclass(frozen=True)
class Budgets:
    path: str
    relative_tolerance: float
    absolute: dict = field(default_factory=dict)  # gpu name -> scenario id -> stack name -> seconds
    targets: dict = field(default_factory=dict)  # gpu name -> scenario id -> stack name -> seconds (never a gate)
    tolerances: dict = field(default_factory=dict)  # gpu name -> scenario id -> stack name -> relative tolerance
    ssim_floors: dict = field(default_factory=dict)  # stack name -> floor
    lossless_default: float = DEFAULT_SSIM_FLOOR
    lossy_default: float = DEFAULT_SSIM_FLOOR

    def latency_budgets(self, gpu: str | None, scenario_id: str, stack: str, recorded=None,
                        stale: tuple[str, ...] = ()) -> list[LatencyBudget]:
        """Every budget of a case: relative to its recorded latency (a store LatencyEntry: its
        median, and its rounds when the recording kept them), then the absolute one of this file."""
        budgets = []
        if recorded is not None:
            median = recorded.median_s
            tolerance = self.tolerance(gpu, scenario_id, stack)
            budgets.append(LatencyBudget(
                median * (1 + tolerance),
                "relative",
                f"recorded {median:.3f} s + {tolerance:.0%}",
                tolerance,
                tuple(recorded.samples_s),
                recorded.sm_clock_mhz,
                tuple(stale),
                median,
            ))
        seconds = _lookup(self.absolute, gpu, scenario_id, stack)
        if seconds is not None:
            budgets.append(LatencyBudget(seconds, "absolute", f"{Path(self.path).name} [{gpu}] {scenario_id} {stack}"))
        return budgets

    def tolerance(self, gpu: str | None, scenario_id: str, stack: str) -> float:
        """The case's own tolerance where this file names one (a case measured to move more than
        the default between machines of one GPU model), else the default."""
        return _lookup(self.tolerances, gpu, scenario_id, stack, self.relative_tolerance)

    def target(self, gpu: str | None, scenario_id: str, stack: str) -> float | None:
        return _lookup(self.targets, gpu, scenario_id, stack)

    def check_gpu(self, gpu: str | None) -> None:
        """A GPU name in this file that is nearly this GPU's is a typo that would silently
        switch its budgets off: say so."""
        import difflib

        names = set(self.absolute) | set(self.targets) | set(self.tolerances)
        if not gpu or gpu in names:
            return
        close = difflib.get_close_matches(gpu, names, n=1, cutoff=0.85)
        if close:
            raise BudgetsError(f"{self.path}: GPU {close[0]!r} is not this GPU {gpu!r} (NVML's name); "
                               "fix the spelling or its budgets never apply")

    def unbudgeted(self, gpu: str | None) -> str | None:
        """Absolute budgets for other GPUs only (a new GPU model): they are not this card's, so its
        cases are gated by their own references alone; said, since the README promises both."""
        if not gpu or not self.absolute or gpu in self.absolute:  # a CPU has no GPU name to key them by
            return None
        return (f"{Path(self.path).name} holds absolute budgets for {', '.join(sorted(self.absolute))} only, none "
                f"for {gpu}: its cases are gated by their recorded references alone (commit some under "
                f"[latency.absolute.\"{gpu}\"])")

    def ssim_floor(self, stack: str, lossless: bool) -> tuple[float, str]:
        stack = stack_label(stack)
        if stack in self.ssim_floors:
            return self.ssim_floors[stack], f"{Path(self.path).name} [fidelity.ssim] {stack}"
        if lossless:
            return self.lossless_default, "lossless default"
        return self.lossy_default, "lossy default"


def _number(value, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BudgetsError(f"{where} = {value!r}: expected a number in [{low}, {high}]")
    return float(value)


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise BudgetsError(f"{where} must be a table, got {type(value).__name__}")
    return value


def _only(table: dict, allowed: set, where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise BudgetsError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def load_budgets(path: str | Path) -> Budgets:
    path = Path(path)
    if not path.is_file():
        raise BudgetsError(f"budgets file {path} does not exist (expected latency budgets and fidelity floors)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BudgetsError(f"budgets file {path} is not valid TOML: {error}") from None
    where = path.name
    _only(data, {"latency", "fidelity"}, where)
    latency = _table(data.get("latency", {}), f"{where} [latency]")
    _only(latency, {"relative_tolerance", "absolute", "targets", "tolerances"}, f"{where} [latency]")
    # Up to 10 (1000 %): plumbing tests on busy CPUs use a band no CPU noise reaches.
    tolerance = _number(latency.get("relative_tolerance", DEFAULT_RELATIVE_TOLERANCE),
                        f"{where} latency.relative_tolerance", 0.0, 10.0)
    fidelity = _table(data.get("fidelity", {}), f"{where} [fidelity]")
    _only(fidelity, {"lossless_default", "lossy_default", "ssim"}, f"{where} [fidelity]")
    # An SSIM floor at or under 0 would let every image pass.
    floors = _by_stack(_table(fidelity.get("ssim", {}), f"{where} [fidelity.ssim]"), f"{where} fidelity.ssim",
                       lambda value, place: _number(value, place, 1e-6, 1.0))
    return Budgets(
        path=str(path),
        relative_tolerance=tolerance,
        absolute=_seconds_by_gpu(latency, "absolute", where),
        targets=_seconds_by_gpu(latency, "targets", where),
        tolerances=_seconds_by_gpu(latency, "tolerances", where, low=0.0, high=10.0),
        ssim_floors=floors,
        lossless_default=_number(fidelity.get("lossless_default", DEFAULT_SSIM_FLOOR),
                                 f"{where} fidelity.lossless_default", 1e-6, 1),
        lossy_default=_number(fidelity.get("lossy_default", DEFAULT_SSIM_FLOOR), f"{where} fidelity.lossy_default",
                              1e-6, 1),
    )


def _stack_name(name: str, where: str) -> str:
    """A stack named in this file must exist (a misspelt one would silently never apply); it is
    kept as runs name it: stripped, no spaces around `+`."""
    from ..components.stacks import StackError, parse_stack

    try:
        parse_stack(name)
    except StackError as error:
        raise BudgetsError(f"{where}: {error}") from None
    return stack_label(name)


def _scenario_id(text: str, where: str) -> str:
    """`512@6` and `512x512@6` are one scenario: keyed by its id, as runs name it."""
    from ..model.scenarios import ScenarioError, parse_scenario

    try:
        return parse_scenario(text).id
    except ScenarioError as error:
        raise BudgetsError(f"{where}: {error}") from None


def _normalized(table: dict, normalize, where: str) -> dict:
    """`table` keyed by `normalize(key, where)`; two spellings of one key are an error naming both
    (TOML keeps both, and the later would silently win)."""
    out, spelled = {}, {}
    for key, value in table.items():
        name = normalize(key, where)
        if name in out:
            raise BudgetsError(f"{where}: {spelled[name]!r} and {key!r} are both {name!r}; keep one")
        out[name], spelled[name] = value, key
    return out


def _by_stack(table: dict, where: str, value_of) -> dict:
    stacks = _normalized(table, _stack_name, where)
    return {stack: value_of(value, f"{where}.{stack}") for stack, value in stacks.items()}


def _seconds_by_gpu(latency: dict, key: str, where: str, low: float = 1e-4, high: float = 3600) -> dict:
    """[latency.<key>."GPU NAME"] "HxW@STEPS" = { stack = seconds (or, for tolerances, a fraction) }."""
    out: dict = {}
    for gpu, scenarios in _table(latency.get(key, {}), f"{where} [latency.{key}]").items():
        place = f"{where} latency.{key}.\"{gpu}\""
        out[gpu] = {
            scenario_id: _by_stack(_table(stacks, f"{place}.\"{scenario_id}\""), f"{place}.\"{scenario_id}\"",
                                   lambda seconds, at: _number(seconds, at, low, high))
            for scenario_id, stacks in _normalized(_table(scenarios, place), _scenario_id, place).items()
        }
    return out
