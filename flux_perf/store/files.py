"""Writing files so that a crash never leaves half of one behind."""

from __future__ import annotations

import math
import os
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> Path:
    """Write to a temporary sibling, then rename over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, data, *, indent: int = 1, sort_keys: bool = False) -> Path:
    """`data` as JSON (one trailing newline), written atomically."""
    import json

    return atomic_write(path, (json.dumps(data, indent=indent, sort_keys=sort_keys, default=str) + "\n").encode())


def finite_number(value) -> bool:
    """A JSON value that is a real, finite number (not a bool, NaN or infinity): what every
    stored reference and result must hold before arithmetic trusts it."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float (10**400): no measured number
        return False


def positive_number(value) -> bool:
    return finite_number(value) and value > 0


def non_negative_number(value) -> bool:
    return finite_number(value) and value >= 0
