"""Convert a baseline folder of schema 1 (before the store was versioned) to this schema: the
same measurements, each entry's provenance regrouped under `provenance`. What schema 1 did not
record (the source hash, the code of each component, the stack keys behind a calibration's
spreads) stays unknown, and the staleness rules say nothing of it."""

from __future__ import annotations

import json
from pathlib import Path

from .entries import SCHEMA_KEY, SCHEMA_VERSION, BaselineError, SchemaError
from .files import write_json

_PROVENANCE_KEYS = ("recorded_at", "created_at", "commit", "software", "driver_version")


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
    if path.name in ("latency.json", "fidelity.json", "calibration.json"):
        if not all(isinstance(t, dict) and all(isinstance(e, dict) for e in t.values()) for t in data.values()):
            raise SchemaError(f"{path}: expected scenario -> stack -> entry objects (schema 1)")
        convert = _calibration if path.name == "calibration.json" else _entry
        return {SCHEMA_KEY: SCHEMA_VERSION, "entries": {scenario: {name: convert(entry) for name, entry in t.items()}
                                                        for scenario, t in data.items()}}
    gpu = data.get("gpu") if isinstance(data.get("gpu"), dict) else {}  # a bf16 baseline's record
    kept = {k: v for k, v in data.items() if k not in _PROVENANCE_KEYS}
    return {**kept, SCHEMA_KEY: SCHEMA_VERSION, "provenance": _provenance(data, gpu.get("driver_version"))}


def migrate_folder(folder: Path) -> list[str]:
    """Rewrite every schema-1 file of `folder` in place; return what was done, file by file. Every
    file is converted in memory first: one that cannot be leaves the whole folder untouched."""
    if not folder.is_dir():
        raise BaselineError(f"{folder}: not a baseline folder (<baselines>/<gpu>/<model fingerprint>)")
    converted = {path: _converted(path) for path in sorted(folder.glob("*.json"))}
    lines = []
    for path, data in converted.items():
        if data is None:
            lines.append(f"{path}: already schema {SCHEMA_VERSION}")
            continue
        write_json(path, data, indent=2, sort_keys=True)
        lines.append(f"{path}: schema 1 -> {SCHEMA_VERSION}")
    return lines
