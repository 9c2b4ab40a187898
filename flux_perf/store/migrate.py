"""Convert a baseline folder of schema 1 (before the store was versioned) to this schema: the
same measurements, each entry's provenance regrouped under `provenance`. What schema 1 did not
record (the source hash, the code of each component, the stack keys behind a calibration's
spreads) stays unknown, and the staleness rules say nothing of it."""

from __future__ import annotations

import json
from pathlib import Path

from ..model.scenarios import ScenarioError, parse_scenario
from .entries import SCHEMA_KEY, SCHEMA_VERSION, BaselineError, SchemaError
from .files import write_json

_PROVENANCE_KEYS = ("recorded_at", "created_at", "commit", "software", "driver_version")
TABLE_FILES = ("latency.json", "fidelity.json", "calibration.json")
LEVEL = "<baselines>/<gpu>/<model fingerprint>"


def _provenance(entry: dict, driver: str | None = None) -> dict:
    commit = entry.get("commit") or None
    dirty = bool(commit and commit.endswith("-dirty"))
    return {"recorded_at": entry.get("recorded_at") or entry.get("created_at") or "",
            "commit": commit.removesuffix("-dirty") if commit else None,
            "uncommitted": "changes not hashed (schema 1 marked them -dirty)" if dirty else None,
            "source": None, "software": entry.get("software") or {},
            "driver": entry.get("driver_version") or driver, "components": {}}


def _entry(entry: dict) -> dict:
    return {**{k: v for k, v in entry.items() if k not in _PROVENANCE_KEYS}, "provenance": _provenance(entry)}


def _calibration(entry: dict) -> dict:
    converted = _entry(entry)
    converted.setdefault("stacks", {})  # schema 1 kept no stack keys behind the spreads
    return converted


def _converted(path: Path) -> dict | None:
    """The file in this schema; None when it already is. Only a file without any schema version is
    schema 1: a newer one, or one of the wrong shape, is an error naming it (nothing is rewritten)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SchemaError(f"{path}: cannot be read as JSON ({error}); fix or restore it first") from None
    if not isinstance(data, dict):
        raise SchemaError(f"{path} is a JSON {type(data).__name__}, not a flux-perf store file")
    if SCHEMA_KEY in data:
        if data[SCHEMA_KEY] == SCHEMA_VERSION:
            return None
        raise SchemaError(f"{path} has schema version {data[SCHEMA_KEY]!r}: this flux-perf converts only "
                          f"version 1 (no version key) to {SCHEMA_VERSION}")
    if path.name in TABLE_FILES:
        if not all(isinstance(t, dict) and all(isinstance(e, dict) for e in t.values()) for t in data.values()):
            raise SchemaError(f"{path}: expected scenario -> stack -> entry objects (schema 1)")
        convert = _calibration if path.name == "calibration.json" else _entry
        return {SCHEMA_KEY: SCHEMA_VERSION, "entries": {scenario: {name: convert(entry) for name, entry in t.items()}
                                                        for scenario, t in data.items()}}
    if "image_sha256" not in data:  # every bf16 baseline record names its image's hash, schema 1 too
        raise SchemaError(f"{path}: named like a bf16 baseline record of {path.stem} but holds no image_sha256: "
                          "not a flux-perf store file; move it out of the folder")
    gpu = data.get("gpu") if isinstance(data.get("gpu"), dict) else {}  # a bf16 baseline's record
    kept = {k: v for k, v in data.items() if k not in _PROVENANCE_KEYS}
    return {**kept, SCHEMA_KEY: SCHEMA_VERSION, "provenance": _provenance(data, gpu.get("driver_version"))}


def is_store_file(path: Path) -> bool:
    """latency.json, fidelity.json, calibration.json or a bf16 baseline record `<scenario id>.json`:
    the only files of a baseline folder migrate may rewrite (a copied results.json is left alone)."""
    if path.name in TABLE_FILES:
        return True
    try:
        return path.suffix == ".json" and parse_scenario(path.stem).id == path.stem
    except ScenarioError:
        return False


def store_files(folder: Path) -> list[Path]:
    """The store files of a baseline folder; a folder without any (one level too high, or not a
    store) is an error naming it, the level expected and the folders under it that hold some."""
    if not folder.is_dir():
        raise BaselineError(f"{folder}: not a baseline folder ({LEVEL})")
    found = [p for p in sorted(folder.glob("*.json")) if is_store_file(p)]
    if found:
        return found
    below = sorted({p.parent for pattern in ("*/*.json", "*/*/*.json") for p in folder.glob(pattern)
                    if is_store_file(p)})
    hint = (f"; these folders under it hold store files, pass them instead: {', '.join(map(str, below[:8]))}"
            + (f" and {len(below) - 8} more" if len(below) > 8 else "")) if below else ""
    raise BaselineError(f"{folder} holds no store file (latency.json, fidelity.json, calibration.json or "
                        "<scenario>.json such as 512x512@6.json): migrate takes the folder of one GPU model and "
                        f"weights, {LEVEL}{hint}")


def migrate_folder(folder: Path) -> list[str]:
    """Rewrite every schema-1 store file of `folder` in place; return what was done, file by file.
    Every file is converted in memory first: one that cannot be leaves the whole folder untouched.
    Any other JSON file in it is left alone and said so."""
    files = store_files(folder)
    converted = {path: _converted(path) for path in files}
    lines = [f"{path}: left alone (not a store file)" for path in sorted(folder.glob("*.json")) if path not in files]
    for path, data in converted.items():
        if data is None:
            lines.append(f"{path}: already schema {SCHEMA_VERSION}")
            continue
        write_json(path, data, indent=2, sort_keys=True)
        lines.append(f"{path}: schema 1 -> {SCHEMA_VERSION}")
    return lines
