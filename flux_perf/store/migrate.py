"""Convert a baseline folder of schema 1 (before the store was versioned) to this schema: the
same measurements, each entry's provenance regrouped under `provenance`. What schema 1 did not
record (the source hash, the code of each component, the stack keys behind a calibration's
spreads) stays unknown, and the staleness rules say nothing of it."""

from __future__ import annotations

import json
from pathlib import Path

from .entries import SCHEMA_KEY, SCHEMA_VERSION
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


def migrate_folder(folder: Path) -> list[str]:
    """Rewrite every schema-1 file of `folder` in place; return what was done, file by file."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a baseline folder (<baselines>/<gpu>/<model fingerprint>)")
    lines = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get(SCHEMA_KEY) == SCHEMA_VERSION:
            lines.append(f"{path}: already schema {SCHEMA_VERSION}")
            continue
        if path.name in ("latency.json", "fidelity.json", "calibration.json"):
            convert = _calibration if path.name == "calibration.json" else _entry
            entries = {scenario: {name: convert(entry) for name, entry in table.items()}
                       for scenario, table in data.items()}
            write_json(path, {SCHEMA_KEY: SCHEMA_VERSION, "entries": entries}, indent=2, sort_keys=True)
        else:  # a bf16 baseline's record
            driver = (data.get("gpu") or {}).get("driver_version")
            kept = {k: v for k, v in data.items() if k not in _PROVENANCE_KEYS}
            write_json(path, {**kept, SCHEMA_KEY: SCHEMA_VERSION, "provenance": _provenance(data, driver)},
                       indent=2, sort_keys=True)
        lines.append(f"{path}: schema 1 -> {SCHEMA_VERSION}")
    return lines
