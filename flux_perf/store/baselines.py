"""The baseline store on disk: bf16 reference images (and their final latents) with provenance,
each stack's recorded latency and fidelity, its own final latents, and the fidelity calibration.

Layout: `<root>/<gpu-slug>/<model-fingerprint>/<scenario-id>.png`, `.json` and `.latents.npy`,
each other stack's `<scenario-id>.<stack>.latents.npy`, plus `latency.json`, `fidelity.json` and
`calibration.json` per folder. Keyed so an H100 never compares with another GPU's images and
synthetic weights never with real ones. Every write of the store is here, and only an explicit
update reaches it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
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
)
from .files import atomic_write, write_json
from .provenance import Provenance

TABLES = {"latency.json": LatencyEntry, "fidelity.json": FidelityEntry, "calibration.json": CalibrationEntry}


class BaselineMissing(BaselineError):
    pass


@dataclass(frozen=True)
class BaselineKey:
    gpu_slug: str
    fingerprint: str
    scenario_id: str

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


def updates_allowed(force: bool) -> None:
    ci = os.environ.get("CI", "")
    if ci.strip().lower() not in ("", "0", "false", "no") and not force:
        raise UpdateRefused(
            f"refusing to rewrite baselines under CI={ci}: baselines change only on purpose. "
            "Pass --flux-force-update (pytest) or --force (flux-perf baselines update) to do it anyway."
        )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BaselineCorrupt(f"{path} is not valid JSON ({error})") from None


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
    def table(self, key: BaselineKey, name: str) -> dict:
        """The entries of `name` (latency.json, ...) for key's scenario, typed and checked."""
        path = self.folder(key) / name
        if not path.exists():
            return {}
        scenarios = check_schema(_read_json(path), path).get("entries")
        if not isinstance(scenarios, dict) or not all(isinstance(v, dict) for v in scenarios.values()):
            raise BaselineCorrupt(f"{path}: `entries` must be an object of scenario -> name -> entry. "
                                  f"Re-record it with: {UPDATE_HINT}")
        kind = TABLES[name]
        return {inner: kind.from_json(entry, f"{path} [{key.scenario_id}][{inner}]")
                for inner, entry in scenarios.get(key.scenario_id, {}).items()}

    def load_baseline(self, key: BaselineKey, scenario: Scenario) -> Baseline:
        image_path, meta_path = self.paths(key)
        if not image_path.exists() and not meta_path.exists():
            raise BaselineMissing(f"no bf16 baseline image for {key}")
        if not image_path.exists() or not meta_path.exists():
            present = image_path if image_path.exists() else meta_path
            raise BaselineCorrupt(f"baseline {key} is incomplete: only {present} exists. Re-create it with: {UPDATE_HINT}")
        record = check_schema(_read_json(meta_path), meta_path)
        data = image_path.read_bytes()
        if record.get("image_sha256") != sha256(data):
            raise BaselineCorrupt(f"baseline image {image_path} does not match the sha256 in {meta_path.name}: "
                                  "the pair was edited or half-written. Re-create it with: " + UPDATE_HINT)
        try:
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise BaselineCorrupt(f"baseline image {image_path} cannot be read as PNG ({error})") from None
        if record.get("fingerprint") != key.fingerprint:
            raise BaselineMismatch(f"baseline {meta_path} was made with weights {record.get('fingerprint')!r}, "
                                   f"this run uses {key.fingerprint!r}")
        if image.shape[:2] != (scenario.height, scenario.width):
            raise BaselineMismatch(f"baseline {image_path} is {image.shape[0]}x{image.shape[1]}, the scenario asks "
                                   f"for {scenario.resolution}")
        recorded = record.get("scenario") if isinstance(record.get("scenario"), dict) else {}
        for name in ("steps", "seed", "guidance"):
            if name in recorded and recorded[name] != getattr(scenario, name):
                raise BaselineMismatch(f"baseline {meta_path} was made with {name}={recorded[name]}, the scenario "
                                       f"has {name}={getattr(scenario, name)}")
        latents = self.read_latents(self.latents_path(key), record.get("latents_sha256"), f"baseline {key}")
        provenance = Provenance.from_json(record.get("provenance") or {})
        return Baseline(image, latents, provenance, image_path)

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
        return np.load(io.BytesIO(data), allow_pickle=False)

    # -- writing (only ever on purpose) -----------------------------------------
    def _write_table_entry(self, key: BaselineKey, name: str, inner: str, entry) -> Path:
        path = self.folder(key) / name
        try:
            data = check_schema(_read_json(path), path) if path.exists() else {}
        except BaselineCorrupt:
            data = {}  # an update on purpose replaces a broken file
        entries = data.get("entries") if isinstance(data.get("entries"), dict) else {}
        entries.setdefault(key.scenario_id, {})[inner] = entry.to_json()
        write_json(path, {SCHEMA_KEY: SCHEMA_VERSION, "entries": entries}, indent=2, sort_keys=True)
        return path

    def write_baseline(self, key: BaselineKey, image: np.ndarray, latents: np.ndarray | None, record: dict, *,
                       force: bool) -> Path:
        updates_allowed(force)
        image_path, meta_path = self.paths(key)
        data = png_bytes(image)
        record = {**record, SCHEMA_KEY: SCHEMA_VERSION, "fingerprint": key.fingerprint, "gpu_slug": key.gpu_slug,
                  "image_sha256": sha256(data), "image_shape": list(image.shape)}
        if latents is not None:
            latent_bytes = npy_bytes(latents)
            atomic_write(self.latents_path(key), latent_bytes)
            record["latents_sha256"] = sha256(latent_bytes)
        # Image first, then the JSON naming its hash: a crash in between leaves a pair that
        # load_baseline() reports as half-written rather than a silently wrong baseline.
        atomic_write(image_path, data)
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
            atomic_write(self.latents_path(key, stack), data)
            entry = FidelityEntry(**{**entry.__dict__, "latents_sha256": sha256(data)})
        return self._write_table_entry(key, "fidelity.json", stack, entry)

    def write_calibration(self, key: BaselineKey, entry: CalibrationEntry, *, force: bool) -> Path:
        updates_allowed(force)
        CalibrationEntry.from_json(entry.to_json(), f"new calibration for {key}")
        return self._write_table_entry(key, "calibration.json", "fidelity", entry)
