"""The suite's settings as one frozen object, built from pytest options or the command line."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..instrument.measure import MeasureSettings
from ..model.scenarios import Scenario, parse_scenarios
from ..components.stacks import Stack, baseline_first, parse_stack, parse_stacks
from ..model.pipeline import DeviceNameError, check_device_name


class ConfigError(ValueError):
    """Settings that contradict each other or name something unusable: the user's input to fix
    (pytest options, command-line arguments). Said in one line, never as a traceback."""


def default_baselines_dir() -> Path:
    """The checkout's baselines/ (the package sits beside it in a checkout or editable install)."""
    return Path(__file__).resolve().parents[2] / "baselines"


@dataclass(frozen=True)
class SuiteConfig:
    model: str | None
    device: str
    stacks: tuple[Stack, ...]
    scenarios: tuple[Scenario, ...]
    measure: MeasureSettings
    strict: bool
    report_dir: Path | None  # None: a command that writes no report (calibrate)
    baselines_dir: Path
    update_baselines: bool
    force_update: bool
    profile: str | None = None
    inject_slowdown: float | None = None
    plant: str | None = None  # test-only: components added to every stack under its own name
    compile_cache: Path | None = None
    enforce_targets: bool = False  # the guide's targets fail the run (otherwise only reported)
    scripted_clock: float | None = None  # test-only: every round takes this many scripted seconds

    def __post_init__(self):
        try:
            check_device_name(self.device)
        except DeviceNameError as error:
            raise ConfigError(str(error)) from None
        if not self.stacks:
            raise ConfigError("no stack to run")
        if not self.scenarios:
            raise ConfigError("no scenario to run")
        if self.inject_slowdown is not None and not 0 < self.inject_slowdown <= 10:
            raise ConfigError(f"inject-slowdown {self.inject_slowdown}: must be a fraction in (0, 10]")
        if self.update_baselines and self.inject_slowdown:
            raise ConfigError("refusing to record references with an injected slow-down: it would become the "
                              "reference every later run is judged against")
        if self.plant is not None:
            parse_stack(self.plant)  # an unknown component is a usage error now, not a failure per test
            if self.update_baselines:
                raise ConfigError(f"refusing to record references with planted components ({self.plant}): they "
                                  "would become the reference every later run is judged against")
        if self.scripted_clock is not None and (not 0 < self.scripted_clock < float("inf") or self.device != "cpu"):
            raise ConfigError(f"scripted clock {self.scripted_clock}: a positive finite number of seconds, and only "
                              "on the CPU (it tests the gate's logic; a GPU's rounds are measured)")
        if self.scripted_clock is not None and self.inject_slowdown:
            raise ConfigError(f"inject-slowdown {self.inject_slowdown} with a scripted clock: the scripted rounds "
                              "would not show it (script the slower seconds instead)")
        if self.update_baselines:
            from ..store.baselines import updates_allowed

            updates_allowed(self.force_update)  # refuse before minutes of measuring, not after

    def check_destinations(self) -> None:
        """Fail before measuring when the report cannot be written: minutes of measurements
        must never be lost to a reporting error at the end."""
        if self.report_dir is not None:
            check_writable_dir(self.report_dir, "report folder")
        from ..store.folders import folder_problem, shown

        problem = folder_problem(self.baselines_dir, writable=False)  # read here; writes check on their own
        if problem:
            raise ConfigError(f"baselines folder {shown(self.baselines_dir)} {problem}")

    @property
    def budgets_path(self) -> Path:
        return self.baselines_dir / "budgets.toml"

    @classmethod
    def from_pytest(cls, config, root: Path) -> SuiteConfig:
        """From the pytest plugin's options; `root` is the project's root, where the default baselines
        lie (the plugin's project_root: not pytest's rootdir where an option's value chose it)."""
        option = config.getoption
        stacks = parse_stacks(option("flux_stacks"))
        if option("flux_update_baselines"):
            stacks = baseline_first(stacks)
        rounds, max_rounds = option("flux_rounds"), option("flux_max_rounds")
        if option("flux_allow_no_gpu") and option("flux_strict"):
            raise ConfigError("--flux-allow-no-gpu passes a run that judged nothing, --flux-strict fails every case it "
                              "could not judge: pass one of them")
        settings = MeasureSettings(rounds=rounds, max_rounds=max_rounds,
                                   max_case_seconds=option("flux_max_case_seconds"),
                                   telemetry_interval_s=option("flux_telemetry_interval"))
        return cls(
            model=option("flux_model"),
            device=option("flux_device"),
            stacks=stacks,
            scenarios=parse_scenarios(option("flux_scenarios")),
            measure=settings,
            strict=option("flux_strict"),
            report_dir=_typed(config, "--flux-report-dir"),
            baselines_dir=_typed(config, "--flux-baselines-dir") or root / "baselines",
            update_baselines=option("flux_update_baselines"),
            force_update=option("flux_force_update"),
            profile=option("flux_profile"),
            inject_slowdown=option("flux_inject_slowdown"),
            plant=option("flux_plant"),
            compile_cache=_typed(config, "--flux-compile-cache"),
            enforce_targets=option("flux_enforce_targets"),
            scripted_clock=option("flux_scripted_clock"),
        )


def check_writable_dir(folder: Path, what: str) -> None:
    from ..store.folders import folder_problem, shown

    problem = folder_problem(folder, writable=True)
    if problem:
        raise ConfigError(f"{what} {shown(folder)} {problem}")


def typed_path(text: str, start: Path | None = None) -> Path:
    """A path the user gave: `~` expanded, a relative one taken from `start` (default: the current
    folder), absolute so that every message names the folder it means."""
    path = Path(os.path.expanduser(str(text)))
    return Path(os.path.abspath(path if path.is_absolute() else (start or Path.cwd()) / path))


def _typed(config, flag: str) -> Path | None:
    """A pytest path option's value made absolute (None when unset), as pytest makes its own: typed
    on the command line or in PYTEST_ADDOPTS it starts at the folder pytest was run from (--basetemp,
    --junitxml); from the ini file's addopts, at the ini file's folder, as the ini's own paths do, so a
    project's folder stays the same from any subfolder. The default too starts where pytest ran."""
    value = config.getoption(flag[2:].replace("-", "_"))
    if not value:
        return None
    here = Path(str(config.invocation_params.dir))
    typed = [*map(str, config.invocation_params.args), *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    inipath = getattr(config, "inipath", None)
    from_ini = inipath is not None and not _names(typed, flag) and _names(config.getini("addopts"), flag)
    return typed_path(value, Path(str(inipath)).parent if from_ini else here)


def _names(args, flag: str) -> bool:
    return any(str(a) == flag or str(a).startswith(flag + "=") for a in args)
