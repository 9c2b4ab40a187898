"""The suite's settings as one frozen object, built from pytest options or the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .measure import MeasureSettings
from .scenarios import Scenario, parse_scenarios
from .stacks import BASELINE, Stack, parse_stacks

DEFAULT_REPORT_DIR = "flux-perf-report"


@dataclass(frozen=True)
class SuiteConfig:
    model: str | None
    device: str
    stacks: tuple[Stack, ...]
    scenarios: tuple[Scenario, ...]
    measure: MeasureSettings
    strict: bool
    report_dir: Path
    baselines_dir: Path
    update_baselines: bool
    force_update: bool
    profile: str | None = None
    inject_slowdown: float | None = None
    compile_cache: Path | None = None

    @property
    def budgets_path(self) -> Path:
        return self.baselines_dir / "budgets.toml"

    @classmethod
    def from_pytest(cls, config) -> SuiteConfig:
        option = config.getoption
        root = Path(str(config.rootpath))
        stacks = parse_stacks(option("flux_stacks"))
        if option("flux_update_baselines") and BASELINE not in [s.name for s in stacks]:
            # Updating means regenerating the bf16 references: always measure that stack, first.
            stacks = (*parse_stacks(BASELINE), *stacks)
        rounds = option("flux_rounds")
        return cls(
            model=option("flux_model"),
            device=option("flux_device"),
            stacks=stacks,
            scenarios=parse_scenarios(option("flux_scenarios")),
            measure=MeasureSettings(rounds=rounds, max_rounds=max(rounds, option("flux_max_rounds"))),
            strict=option("flux_strict"),
            report_dir=Path(option("flux_report_dir")).expanduser(),
            baselines_dir=_resolve(option("flux_baselines_dir") or "baselines", root),
            update_baselines=option("flux_update_baselines"),
            force_update=option("flux_force_update"),
            profile=option("flux_profile"),
            inject_slowdown=option("flux_inject_slowdown"),
            compile_cache=Path(option("flux_compile_cache")).expanduser() if option("flux_compile_cache") else None,
        )


def _resolve(path: str, root: Path) -> Path:
    """Baselines belong to the project: relative paths start at pytest's rootdir, not the cwd."""
    path = Path(os.path.expanduser(path))
    return path if path.is_absolute() else root / path
