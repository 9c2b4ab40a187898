"""The baseline store: bf16 reference images (and their final latents) with provenance,
each stack's recorded latency and fidelity, and the fidelity calibration.

Layout: `<root>/<gpu-slug>/<model-fingerprint>/<scenario-id>.png`, `.json` and `.latents.npy`,
each other stack's own `<scenario-id>.<stack>.latents.npy`, plus `latency.json`, `fidelity.json`
and `calibration.json` per folder. Keyed so an H100 never compares with another GPU's images
and synthetic weights never with real ones. Only an explicit update writes here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .files import atomic_write, finite_number, write_json
from .provenance import minor, software_versions
from .scenarios import Scenario

UPDATE_HINT = "pytest -m h100 --flux-update-baselines   (or: flux-perf baselines update)"


class BaselineError(Exception):
    """Base of every baseline problem; the message says which problem and what to do."""


class BaselineMissing(BaselineError):
    pass


class BaselineCorrupt(BaselineError):
    pass


class BaselineMismatch(BaselineError):
    pass


class UpdateRefused(BaselineError):
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


@dataclass
class Baseline:
    image: np.ndarray
    provenance: dict
    stale: list[str] = field(default_factory=list)  # software that differs from when it was made
    latents: np.ndarray | None = None  # absent for baselines made before latents were kept


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_sha256(image: np.ndarray) -> str:
    """The hash a stored PNG of `image` would have: tells whether an output changed."""
    return _sha256(png_bytes(image))


def updates_allowed(force: bool) -> None:
    ci = os.environ.get("CI", "")
    if ci.strip().lower() not in ("", "0", "false", "no") and not force:
        raise UpdateRefused(
            f"refusing to rewrite baselines under CI={ci}: baselines change only on purpose. "
            "Pass --flux-force-update (pytest) or --force (flux-perf baselines update) to do it anyway."
        )


class BaselineStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def paths(self, key: BaselineKey) -> tuple[Path, Path]:
        folder = self.root / key.folder
        return folder / f"{key.scenario_id}.png", folder / f"{key.scenario_id}.json"

    # -- reading --------------------------------------------------------------
    def load(self, key: BaselineKey, scenario: Scenario) -> Baseline:
        image_path, meta_path = self.paths(key)
        if not image_path.exists() and not meta_path.exists():
            others = sorted(p.name for p in (self.root / key.gpu_slug).glob("*")) if (self.root / key.gpu_slug).is_dir() else []
            hint = f" (this GPU has baselines for other weights: {', '.join(others)})" if others else ""
            raise BaselineMissing(
                f"no baseline for {key}{hint}. Create it on purpose with: {UPDATE_HINT}"
            )
        if not image_path.exists() or not meta_path.exists():
            present = image_path if image_path.exists() else meta_path
            raise BaselineCorrupt(f"baseline {key} is incomplete: only {present} exists. Re-create it with: {UPDATE_HINT}")
        try:
            provenance = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BaselineCorrupt(f"baseline provenance {meta_path} is not valid JSON ({error})") from None
        if not isinstance(provenance, dict):
            raise BaselineCorrupt(f"baseline provenance {meta_path} is a JSON {type(provenance).__name__}, "
                                  f"not an object. Re-create it with: {UPDATE_HINT}")
        data = image_path.read_bytes()
        if provenance.get("image_sha256") != _sha256(data):
            raise BaselineCorrupt(
                f"baseline image {image_path} does not match the sha256 in {meta_path.name}: "
                "the pair was edited or half-written. Re-create it with: " + UPDATE_HINT
            )
        try:
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise BaselineCorrupt(f"baseline image {image_path} cannot be read as PNG ({error})") from None
        if provenance.get("fingerprint") != key.fingerprint:
            raise BaselineMismatch(
                f"baseline {meta_path} was made with weights {provenance.get('fingerprint')!r}, "
                f"this run uses {key.fingerprint!r}"
            )
        if image.shape[:2] != (scenario.height, scenario.width):
            raise BaselineMismatch(
                f"baseline {image_path} is {image.shape[0]}x{image.shape[1]}, the scenario asks for "
                f"{scenario.resolution}"
            )
        recorded = provenance.get("scenario") if isinstance(provenance.get("scenario"), dict) else {}
        for name in ("steps", "seed", "guidance"):
            if name in recorded and recorded[name] != getattr(scenario, name):
                raise BaselineMismatch(
                    f"baseline {meta_path} was made with {name}={recorded[name]}, the scenario has "
                    f"{name}={getattr(scenario, name)}"
                )
        return Baseline(image, provenance, stale_reasons(provenance.get("software", {})),
                        self._load_latents(key, provenance))

    def latents_path(self, key: BaselineKey) -> Path:
        return self.root / key.folder / f"{key.scenario_id}.latents.npy"

    def _load_latents(self, key: BaselineKey, provenance: dict) -> np.ndarray | None:
        return _read_latents(self.latents_path(key), provenance.get("latents_sha256"), f"baseline {key}")

    def stack_latents_path(self, key: BaselineKey, stack: str) -> Path:
        """A stack's own recorded final latents (bf16's are the baseline's)."""
        return self.root / key.folder / f"{key.scenario_id}.{re.sub(r'[^A-Za-z0-9._-]', '_', stack)}.latents.npy"

    def recorded_latents(self, key: BaselineKey, stack: str, recorded: dict | None) -> np.ndarray | None:
        """The final latents the last sanctioned update recorded for this stack, checked against
        the sha256 its fidelity entry names; None when none were recorded."""
        if not recorded or not recorded.get("latents_sha256"):
            return None
        return _read_latents(self.stack_latents_path(key, stack), recorded["latents_sha256"],
                             f"the recorded fidelity of {key} {stack}")

    def _table(self, key: BaselineKey, name: str) -> dict:
        """A per-folder JSON table of scenario id -> name -> entry (`latency.json`, ...)."""
        path = self.root / key.folder / name
        if not path.exists():
            return {}
        try:
            table = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BaselineCorrupt(f"{path} is not valid JSON ({error})") from None
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise BaselineCorrupt(f"{path} must be an object of scenario -> name -> entry. "
                                  f"Re-record it with: {UPDATE_HINT}")
        return table

    def _write_table_entry(self, key: BaselineKey, name: str, inner: str, entry: dict) -> Path:
        path = self.root / key.folder / name
        try:
            table = self._table(key, name)
        except BaselineCorrupt:
            table = {}  # an update on purpose replaces a broken file
        table.setdefault(key.scenario_id, {})[inner] = entry
        write_json(path, table, indent=2, sort_keys=True)
        return path

    def latency_table(self, key: BaselineKey) -> dict:
        """scenario id -> stack -> recorded entry, checked so no nonsense can gate anything."""
        return self._table(key, "latency.json")

    def recorded_fidelity(self, key: BaselineKey, stack: str) -> dict | None:
        """The stack's fidelity against the bf16 baseline, as the last sanctioned update measured it."""
        entry = self._table(key, "fidelity.json").get(key.scenario_id, {}).get(stack)
        if entry is not None:
            _check_fidelity_entry(entry, f"{self.root / key.folder / 'fidelity.json'} [{key.scenario_id}][{stack}]")
        return entry

    def calibration(self, key: BaselineKey) -> dict | None:
        """The lossless band and tolerances `flux-perf calibrate --write` measured for this scenario."""
        entry = self._table(key, "calibration.json").get(key.scenario_id, {}).get("fidelity")
        if entry is not None:
            _check_calibration(entry, f"{self.root / key.folder / 'calibration.json'} [{key.scenario_id}]")
        return entry

    def recorded_latency(self, key: BaselineKey, stack: str) -> dict | None:
        entry = self.latency_table(key).get(key.scenario_id, {}).get(stack)
        if entry is not None:
            _check_latency_entry(entry, f"{self.root / key.folder / 'latency.json'} [{key.scenario_id}][{stack}]")
        return entry

    # -- writing (only ever on purpose) -----------------------------------------
    def save(self, key: BaselineKey, image: np.ndarray, provenance: dict, *, latents: np.ndarray | None = None,
             force: bool = False) -> Path:
        updates_allowed(force)
        image_path, meta_path = self.paths(key)
        data = png_bytes(image)
        record = {**provenance, "fingerprint": key.fingerprint, "gpu_slug": key.gpu_slug,
                  "image_sha256": _sha256(data), "image_shape": list(image.shape)}
        if latents is not None:
            latent_bytes = _npy_bytes(latents)
            atomic_write(self.latents_path(key), latent_bytes)
            record["latents_sha256"] = _sha256(latent_bytes)
        # Image first, then the JSON naming its hash: a crash in between leaves a pair that
        # load() reports as half-written rather than a silently wrong baseline.
        atomic_write(image_path, data)
        write_json(meta_path, record, indent=2, sort_keys=True)
        return image_path

    def record_latency(self, key: BaselineKey, stack: str, entry: dict, *, force: bool = False) -> Path:
        updates_allowed(force)
        _check_latency_entry(entry, f"new latency entry for {key} {stack}")
        return self._write_table_entry(key, "latency.json", stack, entry)

    def record_fidelity(self, key: BaselineKey, stack: str, entry: dict, *, latents: np.ndarray | None = None,
                        force: bool = False) -> Path:
        """A stack's fidelity entry, and its own final latents beside it (the gate measures how far a
        later output moved from them)."""
        updates_allowed(force)
        _check_fidelity_entry(entry, f"new fidelity entry for {key} {stack}")
        entry = dict(entry)
        if latents is not None:
            data = _npy_bytes(latents)
            atomic_write(self.stack_latents_path(key, stack), data)
            entry["latents_sha256"] = _sha256(data)
        return self._write_table_entry(key, "fidelity.json", stack, entry)

    def record_calibration(self, key: BaselineKey, entry: dict, *, force: bool = False) -> Path:
        updates_allowed(force)
        _check_calibration(entry, f"new calibration for {key}")
        return self._write_table_entry(key, "calibration.json", "fidelity", entry)


def _npy_bytes(latents: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, latents.astype(np.float32), allow_pickle=False)  # bf16 values are exact in fp32
    return buffer.getvalue()


def _read_latents(path: Path, expected_sha256: str | None, owner: str) -> np.ndarray | None:
    if expected_sha256 is None:
        return None
    if not path.exists():
        raise BaselineCorrupt(f"{owner} names latents {path.name}, which is missing. Re-create it with: {UPDATE_HINT}")
    data = path.read_bytes()
    if _sha256(data) != expected_sha256:
        raise BaselineCorrupt(f"latents {path} do not match the sha256 {owner} names: edited or half-written. "
                              f"Re-create them with: {UPDATE_HINT}")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _positive(value) -> bool:
    return finite_number(value) and value > 0


def _check_latency_entry(entry, where: str) -> None:
    if not isinstance(entry, dict):
        raise BaselineCorrupt(f"{where} is a {type(entry).__name__}, not an object. Re-record with: {UPDATE_HINT}")
    if not _positive(entry.get("median_s")):
        raise BaselineCorrupt(f"{where}: median_s={entry.get('median_s')!r} is not a positive number of seconds. "
                              f"Re-record with: {UPDATE_HINT}")
    samples = entry.get("samples_s")
    if samples is not None and not (isinstance(samples, list) and all(_positive(s) for s in samples)):
        raise BaselineCorrupt(f"{where}: samples_s must be a list of positive seconds, got {samples!r:.80}. "
                              f"Re-record with: {UPDATE_HINT}")


def _non_negative(value) -> bool:
    return _positive(value) or value == 0


def _fraction(value) -> bool:
    return finite_number(value) and -1 <= value <= 1


def _check_fidelity_entry(entry, where: str) -> None:
    if not isinstance(entry, dict) or not _fraction(entry.get("ssim")):
        raise BaselineCorrupt(f"{where}: needs an ssim in [-1, 1], got {entry!r:.120}. Re-record with: {UPDATE_HINT}")
    psnr, distance = entry.get("psnr"), entry.get("latent_rel_l2")
    if psnr is not None and not _positive(psnr):
        raise BaselineCorrupt(f"{where}: psnr={psnr!r} is not a positive number of dB (null: identical)")
    if distance is not None and not _non_negative(distance):
        raise BaselineCorrupt(f"{where}: latent_rel_l2={distance!r} is not a distance >= 0")


def _check_calibration(entry, where: str) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("band"), dict):
        raise BaselineCorrupt(f"{where}: needs a `band` object; re-run flux-perf calibrate --write")
    band, spread = entry["band"], entry.get("spread") or {}
    if not _fraction(band.get("ssim")):
        raise BaselineCorrupt(f"{where}: band.ssim={band.get('ssim')!r} is not an SSIM")
    for name in ("psnr", "latent_rel_l2"):
        if band.get(name) is not None and not _positive(band[name]):
            raise BaselineCorrupt(f"{where}: band.{name}={band[name]!r} is not a positive number")
    if not isinstance(spread, dict) or not all(
            isinstance(s, dict) and all(_non_negative(v) for v in s.values()) for s in spread.values()):
        raise BaselineCorrupt(f"{where}: spread must map stack -> metric -> a number >= 0, got {spread!r:.120}")


def stale_reasons(recorded: dict) -> list[str]:
    """Software whose minor version differs from the one that made the baseline."""
    current = software_versions()
    reasons = []
    for name in ("torch", "diffusers", "cuda"):
        old, new = recorded.get(name), current.get(name)
        if old and new and minor(str(old)) != minor(str(new)):
            reasons.append(f"{name} {old} -> {new}")
    return reasons


def components_changed(entry: dict | None, stack_key: str) -> list[str]:
    """A named stack whose definition changed since its reference was recorded (e.g. `fast` gained
    a component): the reference describes other code, so say so beside the verdict."""
    recorded = entry.get("stack") if isinstance(entry, dict) else None
    if isinstance(recorded, str) and recorded != stack_key:
        return [f"recorded for the components {recorded}, the stack is now {stack_key}: "
                "record it again on purpose (--flux-update-baselines)"]
    return []


def latency_stale_reasons(entry: dict, driver_version: str | None, stack_key: str | None = None) -> list[str]:
    """Why a recorded latency may no longer describe this machine's software: other torch,
    diffusers or CUDA, another driver, rounds timed by an older measurement method, or a named
    stack whose components changed."""
    from .measure import MEASUREMENT_VERSION

    software = entry.get("software")
    if not isinstance(software, dict):
        return ["recorded without software versions (before flux-perf recorded them)"]
    reasons = stale_reasons(software)
    old_driver = entry.get("driver_version")
    if old_driver and driver_version and old_driver != driver_version:
        reasons.append(f"driver {old_driver} -> {driver_version}")
    if entry.get("measurement_version") != MEASUREMENT_VERSION:
        reasons.append(f"timed by measurement method {entry.get('measurement_version')}, now {MEASUREMENT_VERSION}")
    return reasons + (components_changed(entry, stack_key) if stack_key else [])
