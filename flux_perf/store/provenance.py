"""Where a result or a reference came from: the exact code (commit, a hash of what was not
committed, a hash of flux-perf's own source), the software that ran it, the driver, the date;
and the rules that call a recorded reference stale when any of that moved.

A component's own source is hashed too (asv hashes each benchmark's code the same way): a
reference recorded with other code of a stack's components says so beside its verdict.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata
import inspect
import platform
import re
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import __version__

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# Always part of every result; a stack's components add the packages they import.
CORE_SOFTWARE = ("torch", "cuda", "cudnn", "diffusers")
_DISTRIBUTIONS = ("diffusers", "transformers", "torchao", "nvidia-cudnn-frontend", "flash-attn-4", "flash-attn",
                  "transformer-engine", "torch-tensorrt", "pytest-benchmark", "scikit-image", "nvidia-ml-py")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cudnn_version() -> str | None:
    """cuDNN as major.minor.patch (torch reports 91900 for 9.19.0, 8907 for 8.9.7)."""
    if not torch.backends.cudnn.is_available():
        return None
    number = torch.backends.cudnn.version()
    return None if number is None else dotted_cudnn(number)


def dotted_cudnn(version) -> str:
    """cuDNN's version as major.minor.patch, from torch's integer (91900, 8907) or already dotted:
    references recorded before the dotted form kept the integer, and must compare equal."""
    text = str(version)
    if not text.isdigit():
        return text
    number = int(text)
    if number >= 90000:
        return f"{number // 10000}.{number % 10000 // 100}.{number % 100}"
    return f"{number // 1000}.{number % 1000 // 100}.{number % 100}"


@functools.lru_cache(maxsize=1)
def software_versions() -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": cudnn_version(), "flux_perf": __version__}
    versions.update({name: _version(name) for name in _DISTRIBUTIONS})
    return versions


@functools.lru_cache(maxsize=1)
def _distributions() -> dict:
    return importlib.metadata.packages_distributions()  # reads every installed package's metadata: once


def distribution_of(import_name: str) -> str | None:
    """The installed distribution that provides an import name (`cudnn` -> nvidia-cudnn-frontend)."""
    names = _distributions().get(import_name.split(".")[0]) or []
    return names[0] if names else None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE_ROOT.parent), *args], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 (12 hex) of flux-perf's own Python source: the code that ran, whatever git says
    (a checkout copied without its history still names its code exactly)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def code_identity() -> dict:
    """The commit, and a hash of the changes not committed (tracked diff and untracked files),
    None when the tree is clean or is no git checkout. A package copied into a folder of another
    checkout (an A/B's base side unpacked there) is no checkout of its own: that checkout's commit
    names other code, so only the source hash names this one."""
    top = (_git("rev-parse", "--show-toplevel") or "").strip()
    own = bool(top) and Path(top).resolve() == PACKAGE_ROOT.parent.resolve()
    commit = ((_git("rev-parse", "HEAD") or "").strip() or None) if own else None
    uncommitted = None
    if commit:
        diff = _git("diff", "HEAD", "--binary") or ""
        untracked = (_git("ls-files", "--others", "--exclude-standard") or "").split()
        if diff or untracked:
            digest = hashlib.sha256(diff.encode())
            for name in sorted(untracked):
                path = PACKAGE_ROOT.parent / name
                digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
            uncommitted = digest.hexdigest()[:12]
    return {"commit": commit, "uncommitted": uncommitted, "source": source_hash()}


def git_commit() -> str | None:
    """The commit, with `+<hash of uncommitted changes>` when there are any."""
    code = code_identity()
    if code["commit"] is None:
        return None
    return code["commit"] + (f"+{code['uncommitted']}" if code["uncommitted"] else "")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def minor(version: str | None) -> str | None:
    """'2.11.0+cu130' -> '2.11'."""
    if not version:
        return version
    return ".".join(str(version).split("+")[0].split(".")[:2])


def _digest(files) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(Path(name).read_bytes())
    return digest.hexdigest()[:12]


def _component_module(name: str) -> bool:
    return name.startswith("flux_perf.components.") and not name.endswith(".base")


def _imported_component_modules(module, code: str) -> set:
    """The component modules `module` takes names from at its top (its globals), and those `code` (its
    source, or only the component's own classes in it) imports inside a function (`from .x import`)."""
    found = set()
    for value in vars(module).values():
        source = value if inspect.ismodule(value) else inspect.getmodule(value)
        if source is not None and _component_module(source.__name__):
            found.add(source)
    package = module.__name__.rpartition(".")[0]
    for name in re.findall(r"^\s*from \.(\w+) import", code, re.MULTILINE):
        source = importlib.import_module(f"{package}.{name}")
        if _component_module(source.__name__):
            found.add(source)
    return found


def _helper_files(classes: list) -> set[str]:
    """The source files of the component modules that the classes' modules import from, and those
    import from (FLUX's processor body, the layer lists): code a component runs without inheriting
    it. In the classes' own modules only their own lazy imports count: attention.py's FlashAttention
    class imports FA3 and FA4 when it applies, which cuDNN's class in the same module never runs."""
    own = {inspect.getmodule(cls) for cls in classes}
    todo = [(inspect.getmodule(cls), inspect.getsource(cls)) for cls in classes]
    seen = set(own)
    while todo:
        module, code = todo.pop()
        for source in _imported_component_modules(module, code) - seen:
            seen.add(source)
            todo.append((source, inspect.getsource(source)))
    return {inspect.getsourcefile(module) for module in seen - own}


def component_code(components: Iterable) -> dict[str, str]:
    """spec -> sha256 (12 hex) of the source files that define the component (its class and the
    component classes it inherits, not the shared base): a changed component changes its hash.
    "spec (helpers)" -> the same of the component modules it imports from (kept apart, so that
    entries recorded before helpers were hashed keep their component hashes)."""
    hashes = {}
    for component in components:
        classes = [cls for cls in type(component).__mro__ if _component_module(cls.__module__)]
        own = {inspect.getsourcefile(cls) for cls in classes}
        hashes[component.spec] = _digest(own)
        helpers = _helper_files(classes) - own
        if helpers:
            hashes[f"{component.spec} (helpers)"] = _digest(helpers)
    return hashes


@dataclass(frozen=True)
class Provenance:
    """Who made a result or a reference, with what."""

    recorded_at: str
    commit: str | None
    uncommitted: str | None  # hash of changes not committed; None: a clean tree
    source: str | None  # hash of flux-perf's own source
    software: dict = field(default_factory=dict)
    driver: str | None = None
    components: dict = field(default_factory=dict)  # spec -> hash of its code (component_code)

    @classmethod
    def now(cls, driver: str | None = None, components: dict | None = None) -> Provenance:
        code = code_identity()
        return cls(now_iso(), code["commit"], code["uncommitted"], code["source"], dict(software_versions()),
                   driver, dict(components or {}))

    @classmethod
    def from_json(cls, data: dict) -> Provenance:
        """From a stored entry; entries older than this class kept `commit` ('sha-dirty'),
        `software` and `driver_version` flat in the entry."""
        software = dict(data.get("software")) if isinstance(data.get("software"), dict) else {}
        if software.get("cudnn"):  # entries recorded before the dotted form kept torch's integer (91900)
            software["cudnn"] = dotted_cudnn(software["cudnn"])
        return cls(str(data.get("recorded_at") or data.get("created_at") or ""), data.get("commit"),
                   data.get("uncommitted"), data.get("source"), software,
                   data.get("driver") or data.get("driver_version"),
                   data.get("components") if isinstance(data.get("components"), dict) else {})

    def to_json(self) -> dict:
        return asdict(self)


def stale_reasons(recorded: Provenance, current: Provenance, packages: Iterable[str] = ()) -> list[str]:
    """Why something recorded under `recorded` may no longer describe what runs under `current`:
    another minor version of the core software or of a package the stack imports, another
    driver, or changed code of one of its components. Nothing is said of what was not recorded."""
    reasons = []
    for name in dict.fromkeys([*CORE_SOFTWARE, *packages]):
        old, new = recorded.software.get(name), current.software.get(name)
        if old and new and minor(str(old)) != minor(str(new)):
            reasons.append(f"{name} {old} -> {new}")
    if recorded.driver and current.driver and recorded.driver != current.driver:
        reasons.append(f"driver {recorded.driver} -> {current.driver}")
    for spec, old in recorded.components.items():
        new = current.components.get(spec)
        if new and old != new:
            reasons.append(f"the code of component {spec} changed ({old} -> {new})")
    return reasons
