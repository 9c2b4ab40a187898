"""The one place that forms a printed command which records references. A hint must record what
the run that printed it lacked, where that run looks: a hint without the run's baselines folder
wrote into the checkout's committed baselines/ (an outside-in audit)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from ..components.stacks import DEFAULT_STACKS
from ..model.scenarios import BUILTIN
from .config import default_baselines_dir

DEFAULT_DEVICES = ("cuda", "cuda:0")  # what `flux-perf` picks on a GPU machine when --device is not given


def record_command(action: str = "baselines update", *, baselines_dir: Path | None = None, model: str | None = None,
                   device: str | None = None, stacks: Sequence[str] = (), scenarios: Sequence[str] = ()) -> str:
    """`flux-perf ACTION` with every option whose default would record something else or elsewhere:
    the stacks and scenarios given, the model and device when not the defaults, and the baselines
    folder when it is not the one `flux-perf` defaults to (the checkout's baselines/)."""
    words = ["flux-perf", *action.split()]
    if stacks:
        words += ["--stacks", ",".join(stacks)]
    if scenarios:
        words += ["--scenarios", ",".join(scenarios)]
    if model:
        words += ["--model", model]
    if device and device not in DEFAULT_DEVICES:
        words += ["--device", device]
    if baselines_dir is not None and not _same_folder(baselines_dir, default_baselines_dir()):
        words += ["--baselines-dir", str(Path(baselines_dir).absolute())]  # pasted from any folder
    return shlex.join(words)


def config_command(config, stacks: Sequence[str] = (), scenarios: Sequence[str] = (),
                   action: str = "baselines update") -> str:
    """`record_command` for the run of `config` (a SuiteConfig)."""
    return record_command(action, baselines_dir=config.baselines_dir, model=config.model, device=config.device,
                          stacks=stacks, scenarios=scenarios)


def bootstrap_command(config, action: str = "baselines update") -> str:
    """Records everything the run of `config` lacked: its own stacks and scenarios (the defaults
    left out), so following it leaves none of this run's cases without a reference."""
    stacks = tuple(s.name for s in config.stacks)
    scenarios = tuple(s.id for s in config.scenarios)
    return config_command(config, () if stacks == DEFAULT_STACKS else stacks,
                          () if scenarios == tuple(s.id for s in BUILTIN) else scenarios, action)


def case_command(config, bootstrap: bool, stack: str, scenario: str, action: str = "baselines update") -> str:
    """The command that records a missing reference of (stack, scenario) for the run of `config`;
    with nothing recorded for its GPU and weights (`bootstrap`), the bootstrap of the whole run.
    `action` another subcommand (`calibrate --write`); `stack` may list several, or none ("")."""
    if bootstrap:
        return bootstrap_command(config, action)
    return config_command(config, (stack,) if stack else (), (scenario,), action)


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:  # a symlink loop: compare as written
        return Path(a).absolute() == Path(b).absolute()
