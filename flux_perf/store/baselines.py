"""The baseline store on disk: bf16 reference images (and their final latents) with provenance,
each stack's recorded latency and fidelity, its own final latents, and the fidelity calibration.

Layout: `<root>/<gpu-slug>/<model-fingerprint>/<scenario-id>.png`, `.json` and `.latents.npy`,
each other stack's `<scenario-id>.<stack>.latents.npy`, plus `latency.json`, `fidelity.json` and
`calibration.json` per folder. Keyed so an H100 never compares with another GPU's images and
synthetic weights never with real ones. Every write of the store is here, and only an explicit
update reaches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..model.scenarios import Scenario
from .entries import (
    SCHEMA_KEY,
    SCHEMA_VERSION,
    UPDATE_HINT,
    BaselineCorrupt,
    BaselineError,
    BaselineMismatch,
    CalibrationEntry,
    FidelityEntry,
    LatencyEntry,
    UpdateRefused,
    check_schema,
    checked_provenance,
)
from .files import atomic_write, write_json
from .folders import folder_problem, os_reason, shown
from .placement import (Bf16Record, Place, check_calibration, check_entry_place, check_record, check_scenario,
                        copied_from)
from .provenance import Provenance

TABLES = {"latency.json": LatencyEntry, "fidelity.json": FidelityEntry, "calibration.json": CalibrationEntry}


class BaselineMissing(BaselineError):
    pass


class BaselineUnwritable(BaselineError):
    """The store cannot be written: said before anything is measured, naming the folder."""


def _fix_hint(path: Path) -> str:
    return (f"Fix it by hand or restore it (git checkout -- {path}): an update refuses to rewrite a file it "
            "cannot read whole, so none of its entries is lost")


@dataclass(frozen=True)
class BaselineKey:
    gpu_slug: str
    fingerprint: str
    scenario_id: str
    gpu_name: str | None = field(default=None, compare=False)  # this machine's, for messages and stamps

    @property
    def folder(self) -> Path:
        return Path(self.gpu_slug) / self.fingerprint

    def __str__(self) -> str:
        return f"{self.gpu_slug}/{self.fingerprint}/{self.scenario_id}"


@dataclass(frozen=True)
class Baseline:
    """The bf16 reference of one scenario: its image, final latents and provenance."""

    image: np.ndarray
    latents: np.ndarray | None
    provenance: Provenance
    path: Path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_sha256(image: np.ndarray) -> str:
    """The hash a stored PNG of `image` would have: tells whether an output changed."""
    return sha256(png_bytes(image))


def npy_bytes(latents: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, latents.astype(np.float32), allow_pickle=False)  # bf16 values are exact in fp32
    return buffer.getvalue()


UPDATE_FORCE = "--flux-force-update (pytest) or --force (flux-perf baselines update)"


def updates_allowed(force: bool, option: str = UPDATE_FORCE) -> None:
    """Refused under CI unless forced; `option`: how the command that asked forces it."""
    ci = os.environ.get("CI", "")
    if ci.strip().lower() not in ("", "0", "false", "no") and not force:
        raise UpdateRefused(
            f"refusing to rewrite baselines under CI={ci}: baselines change only on purpose. "
            f"Pass {option} to do it anyway."
        )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BaselineCorrupt(f"{path} is not valid JSON: line {error.lineno} column {error.colno}: {error.msg}. "
                              + _fix_hint(path)) from None
    except UnicodeDecodeError as error:
        raise BaselineCorrupt(f"{path} is not valid JSON: not UTF-8 text ({error.reason} at byte {error.start}). "
                              + _fix_hint(path)) from None


def _table_file(path: Path) -> dict:
    """A table file (latency.json, ...) of this schema whose `entries` map scenario -> name -> entry."""
    data = check_schema(_read_json(path), path)
    scenarios = data.get("entries")
    for scenario, entries in (scenarios.items() if isinstance(scenarios, dict) else [(None, scenarios)]):
        if not isinstance(entries, dict):
            at = "`entries`" if scenario is None else f"`entries` [{scenario}]"
            raise BaselineCorrupt(f"{path}: `entries` must be an object of scenario -> name -> entry; {at} is "
                                  f"{entries!r:.60}. " + _fix_hint(path))
    return data


def _entry(name: str, entry, where: str, key: BaselineKey, beside: Bf16Record | None):
    """One entry of table `name`, typed and checked, read for `key`; `beside`: the scenario's bf16
    record, which says where entries older than their stamp were made (None: where it was
    recorded is not checked)."""
    typed = TABLES[name].from_json(entry, where)
    if beside is not None:
        check_entry_place(entry, where, Place(key.gpu_name, key.gpu_slug, key.fingerprint), beside.data, beside.path)
    return check_calibration(typed, where, str(key)) if isinstance(typed, CalibrationEntry) else typed


@contextlib.contextmanager
def _writing(path: Path):
    """An OSError while writing names the store's file, never the temporary beside it."""
    try:
        yield
    except OSError as error:
        raise BaselineUnwritable(f"cannot write {path}: {os_reason(error)}. Make {path.parent} writable "
                                 "(or pass --baselines-dir with a writable copy) and update again") from None


def _latents(path: Path, data: bytes, owner: str) -> np.ndarray:
    """Stored final latents, checked: an .npy of finite floats (never a pickle). The hash can match
    a file that was bad when it was written, so the content is checked too."""
    fix = f"Re-record them with: {UPDATE_HINT}"
    try:
        latents = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BaselineCorrupt(f"latents {path} ({owner}) cannot be read as an .npy array of numbers "
                              f"({str(error).splitlines()[0][:120]}). {fix}") from None
    if not isinstance(latents, np.ndarray) or not np.issubdtype(latents.dtype, np.floating) or latents.ndim < 2:
        raise BaselineCorrupt(f"latents {path} ({owner}) hold {getattr(latents, 'dtype', type(latents))} of shape "
                              f"{getattr(latents, 'shape', None)}, not final latents (floats, batch x tokens x "
                              f"channels). {fix}")
    if not np.isfinite(latents).all():
        raise BaselineCorrupt(f"latents {path} ({owner}) hold NaN or infinite values. {fix}")
    return latents


class BaselineStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, key: BaselineKey) -> Path:
        return self.root / key.folder

    def paths(self, key: BaselineKey) -> tuple[Path, Path]:
        folder = self.folder(key)
        return folder / f"{key.scenario_id}.png", folder / f"{key.scenario_id}.json"

    def latents_path(self, key: BaselineKey, stack: str | None = None) -> Path:
        """bf16's final latents (the baseline's), or another stack's own."""
        middle = "" if stack is None else "." + re.sub(r"[^A-Za-z0-9._-]", "_", stack)
        return self.folder(key) / f"{key.scenario_id}{middle}.latents.npy"

    def has_references(self, gpu_slug: str, fingerprint: str) -> bool:
        """Whether anything was ever recorded for this GPU model and these weights."""
        return any((self.root / gpu_slug / fingerprint).glob("*.json"))

    # -- reading --------------------------------------------------------------
    def table(self, key: BaselineKey, name: str, only: str | None = None, record: Bf16Record | None = None) -> dict:
        """The entries of `name` (latency.json, ...) for key's scenario, typed and checked; with `only`,
        where they were recorded is checked for that entry alone (another's copied entry is its own problem).
        `record`: the scenario's bf16 record as the caller read it for this key (bf16_record), else read here."""
        path = self.folder(key) / name
        if not path.exists():
            return {}
        beside = record or self.bf16_record(key)
        return {inner: _entry(name, entry, f"{path} [{key.scenario_id}][{inner}]", key,
                              beside if only in (None, inner) else None)
                for inner, entry in _table_file(path)["entries"].get(key.scenario_id, {}).items()}

    def bf16_record(self, key: BaselineKey) -> Bf16Record:
        """The scenario's bf16 record as far as it reads (its own problems are the baseline's), and its path."""
        path = self.paths(key)[1]
        try:
            return Bf16Record(check_schema(_read_json(path), path) if path.is_file() else None, None, path)
        except BaselineError as error:
            return Bf16Record(None, error, path)

    def listing(self, folder: Path, name: str) -> list[tuple[str, str, object]]:
        """Every entry of one table file, for `baselines show`: (scenario, name, the typed entry or
        the BaselineError it raised), so one bad entry hides no other. A file that cannot be read
        whole raises."""
        path, out = folder / name, []
        for scenario, entries in sorted(_table_file(path)["entries"].items()):
            key = BaselineKey(folder.parent.name, folder.name, scenario)
            beside = self.bf16_record(key)
            for inner, entry in sorted(entries.items()):
                try:
                    out.append((scenario, inner, _entry(name, entry, f"{path} [{scenario}][{inner}]", key, beside)))
                except BaselineError as error:
                    out.append((scenario, inner, error))
        return out

    def check_update(self, gpu_slug: str, fingerprint: str) -> Path:
        """Before an update builds or measures anything: every table it will rewrite can be read
        whole (a broken one would lose its other entries), and the folder can be written."""
        folder = self.root / gpu_slug / fingerprint
        for name in TABLES:
            if (folder / name).exists():
                _table_file(folder / name)
        problem = folder_problem(folder, writable=True)
        if problem:
            raise BaselineUnwritable(f"baselines folder {shown(folder)} {problem}: nothing was measured. Fix it, "
                                     "or pass --baselines-dir / --flux-baselines-dir with a writable copy")
        return folder

    def load_baseline(self, key: BaselineKey, scenario: Scenario, read: Bf16Record | None = None) -> Baseline:
        """`read`: the record as the caller read it for this key (bf16_record), else read here."""
        image_path, meta_path = self.paths(key)
        if not image_path.exists() and not meta_path.exists():
            raise BaselineMissing(f"no bf16 baseline image for {key}")
        if not image_path.exists() or not meta_path.exists():
            present = image_path if image_path.exists() else meta_path
            raise BaselineCorrupt(f"baseline {key} is incomplete: only {present} exists. Re-create it with: {UPDATE_HINT}")
        read = read or self.bf16_record(key)
        if read.data is None:  # unreadable (its error says why), or gone since it was read
            raise read.error or BaselineMissing(f"no bf16 baseline record {meta_path}")
        record = read.data
        data = image_path.read_bytes()
        if record.get("image_sha256") != sha256(data):
            raise BaselineCorrupt(f"baseline image {image_path} does not match the sha256 in {meta_path.name}: "
                                  "the pair was edited or half-written. Re-create it with: " + UPDATE_HINT)
        try:
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise BaselineCorrupt(f"baseline image {image_path} cannot be read as PNG ({error})") from None
        check_record(record, meta_path, key.gpu_slug, key.fingerprint)
        if image.shape[:2] != (scenario.height, scenario.width):
            raise BaselineMismatch(f"baseline {image_path} is {image.shape[0]}x{image.shape[1]}, the scenario asks "
                                   f"for {scenario.resolution}")
        check_scenario(record, meta_path, scenario)
        latents = self.read_latents(self.latents_path(key), record.get("latents_sha256"), f"baseline {key}")
        return Baseline(image, latents, checked_provenance(record, str(meta_path)), image_path)

    def read_latents(self, path: Path, expected_sha256: str | None, owner: str) -> np.ndarray | None:
        if expected_sha256 is None:
            return None
        if not path.exists():
            raise BaselineCorrupt(f"{owner} names latents {path.name}, which is missing. Re-create it with: "
                                  f"{UPDATE_HINT}")
        data = path.read_bytes()
        if sha256(data) != expected_sha256:
            raise BaselineCorrupt(f"latents {path} do not match the sha256 {owner} names: edited or half-written. "
                                  f"Re-create them with: {UPDATE_HINT}")
        return _latents(path, data, owner)

    # -- writing (only ever on purpose) -----------------------------------------
    def _write_table_entry(self, key: BaselineKey, name: str, inner: str, entry) -> Path:
        # A file that cannot be read whole is an error, never replaced: it holds other entries.
        path = self.folder(key) / name
        entries = _table_file(path)["entries"] if path.exists() else {}
        # Stamped with where it was recorded: a copy of the folder under another GPU or weights says so.
        stamp = {"gpu_slug": key.gpu_slug, "fingerprint": key.fingerprint, "gpu": key.gpu_name or key.gpu_slug}
        entries.setdefault(key.scenario_id, {})[inner] = {**entry.to_json(), **stamp}
        with _writing(path):
            write_json(path, {SCHEMA_KEY: SCHEMA_VERSION, "entries": entries}, indent=2, sort_keys=True)
        return path

    def write_baseline(self, key: BaselineKey, image: np.ndarray, latents: np.ndarray | None, record: dict, *,
                       force: bool) -> Path:
        updates_allowed(force)
        image_path, meta_path = self.paths(key)
        data = png_bytes(image)
        record = {**record, SCHEMA_KEY: SCHEMA_VERSION, "fingerprint": key.fingerprint, "gpu_slug": key.gpu_slug,
                  "image_sha256": sha256(data), "image_shape": list(image.shape)}
        copy = copied_from(self.bf16_record(key).data, key.gpu_slug, key.fingerprint)
        if copy:  # the unstamped entries that came with a copied folder stay refused (placement.py)
            record["replaced_copy"] = copy
        if latents is not None:
            latent_bytes = npy_bytes(latents)
            with _writing(self.latents_path(key)):
                atomic_write(self.latents_path(key), latent_bytes)
            record["latents_sha256"] = sha256(latent_bytes)
        # Image first, then the JSON naming its hash: a crash in between leaves a pair that
        # load_baseline() reports as half-written rather than a silently wrong baseline.
        with _writing(image_path):
            atomic_write(image_path, data)
        with _writing(meta_path):
            write_json(meta_path, record, indent=2, sort_keys=True)
        return image_path

    def write_latency(self, key: BaselineKey, stack: str, entry: LatencyEntry, *, force: bool) -> Path:
        updates_allowed(force)
        LatencyEntry.from_json(entry.to_json(), f"new latency entry for {key} {stack}")  # nonsense never lands
        return self._write_table_entry(key, "latency.json", stack, entry)

    def write_fidelity(self, key: BaselineKey, stack: str, entry: FidelityEntry, latents: np.ndarray | None, *,
                       force: bool) -> Path:
        """A stack's fidelity entry, and its own final latents beside it (the gate measures how far a
        later output moved from them)."""
        updates_allowed(force)
        FidelityEntry.from_json(entry.to_json(), f"new fidelity entry for {key} {stack}")
        if latents is not None:
            data = npy_bytes(latents)
            with _writing(self.latents_path(key, stack)):
                atomic_write(self.latents_path(key, stack), data)
            entry = FidelityEntry(**{**entry.__dict__, "latents_sha256": sha256(data)})
        return self._write_table_entry(key, "fidelity.json", stack, entry)

    def write_calibration(self, key: BaselineKey, entry: CalibrationEntry, *, force: bool) -> Path:
        updates_allowed(force)
        CalibrationEntry.from_json(entry.to_json(), f"new calibration for {key}")
        return self._write_table_entry(key, "calibration.json", "fidelity", entry)
