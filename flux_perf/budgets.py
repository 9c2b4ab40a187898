"""`baselines/budgets.toml`: latency budgets and fidelity floors, edited by hand on purpose."""

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


@dataclass(frozen=True)
class LatencyBudget:
    seconds: float
    kind: str  # "absolute" (from budgets.toml) or "relative" (recorded median x (1 + tolerance))
    source: str  # human-readable origin
    tolerance: float | None = None  # relative budgets: the slow-down that counts as a regression
    recorded_samples: tuple[float, ...] = ()  # relative budgets: the recorded run's rounds

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "kind": self.kind, "source": self.source, "tolerance": self.tolerance,
                "recorded_rounds": len(self.recorded_samples)}


@dataclass(frozen=True)
class Budgets:
    path: str
    relative_tolerance: float
    absolute: dict = field(default_factory=dict)  # gpu name -> scenario id -> stack name -> seconds
    ssim_floors: dict = field(default_factory=dict)  # stack name -> floor
    lossless_default: float = 0.98
    lossy_default: float = 0.8

    def latency_budget(self, gpu: str | None, scenario_id: str, stack: str,
                       recorded: dict | None) -> LatencyBudget | None:
        """Absolute budget from this file, else one relative to the recorded latency entry
        (`median_s`, and `samples_s` when the recording kept its rounds)."""
        seconds = self.absolute.get(gpu or "", {}).get(scenario_id, {}).get(stack)
        if seconds is not None:
            return LatencyBudget(seconds, "absolute", f"{Path(self.path).name} [{gpu}] {scenario_id} {stack}")
        if recorded and recorded.get("median_s"):
            median = recorded["median_s"]
            return LatencyBudget(
                median * (1 + self.relative_tolerance),
                "relative",
                f"recorded {median:.3f} s + {self.relative_tolerance:.0%}",
                self.relative_tolerance,
                tuple(recorded.get("samples_s") or ()),
            )
        return None

    def ssim_floor(self, stack: str, lossless: bool) -> tuple[float, str]:
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
    _only(latency, {"relative_tolerance", "absolute"}, f"{where} [latency]")
    tolerance = _number(latency.get("relative_tolerance", 0.03), f"{where} latency.relative_tolerance", 0.0, 1.0)
    absolute: dict = {}
    for gpu, scenarios in _table(latency.get("absolute", {}), f"{where} [latency.absolute]").items():
        absolute[gpu] = {}
        for scenario_id, stacks in _table(scenarios, f"{where} [latency.absolute.\"{gpu}\"]").items():
            table = _table(stacks, f"{where} latency.absolute.\"{gpu}\".\"{scenario_id}\"")
            absolute[gpu][scenario_id] = {
                stack: _number(seconds, f"{where} latency.absolute.\"{gpu}\".\"{scenario_id}\".{stack}", 1e-4, 3600)
                for stack, seconds in table.items()
            }
    fidelity = _table(data.get("fidelity", {}), f"{where} [fidelity]")
    _only(fidelity, {"lossless_default", "lossy_default", "ssim"}, f"{where} [fidelity]")
    floors = {
        stack: _number(value, f"{where} fidelity.ssim.{stack}", -1.0, 1.0)
        for stack, value in _table(fidelity.get("ssim", {}), f"{where} [fidelity.ssim]").items()
    }
    return Budgets(
        path=str(path),
        relative_tolerance=tolerance,
        absolute=absolute,
        ssim_floors=floors,
        lossless_default=_number(fidelity.get("lossless_default", 0.98), f"{where} fidelity.lossless_default", -1, 1),
        lossy_default=_number(fidelity.get("lossy_default", 0.8), f"{where} fidelity.lossy_default", -1, 1),
    )
