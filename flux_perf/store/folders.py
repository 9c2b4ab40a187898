"""Folders given on the command line, checked before anything is measured: a name the file system
cannot hold, a parent that is a file, a folder that cannot be written. Each problem is one
phrase naming the part at fault, never an OSError from deep inside a run."""

from __future__ import annotations

import errno
import os
from pathlib import Path

NAME_MAX = 255  # bytes of one path component on Linux file systems (ext4, xfs, btrfs, tmpfs)


def shown(path: Path, limit: int = 40) -> str:
    """The path with each overlong component cut, so an error about it stays one readable line."""
    parts = [p if len(p) <= limit else f"{p[:limit]}...({len(p)} characters)" for p in Path(path).parts]
    return str(Path(*parts)) if parts else str(path)


def _name_max(existing: Path) -> int:
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX


def _nearest_existing(folder: Path) -> Path:
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    return existing


def folder_problem(folder: Path, *, writable: bool) -> str | None:
    """Why `folder` cannot serve (as the folder to write in when `writable`), or None; the phrase
    reads after the folder's name. Creates the folder when `writable` (it is written in next)."""
    folder = Path(folder)
    try:
        existing = _nearest_existing(folder.absolute())
        limit = _name_max(existing)
        for part in folder.parts:
            if len(os.fsencode(part)) > limit:
                return (f"has a name longer than the {limit} bytes a file name may have here "
                        f"({shown(Path(part))}): choose a shorter one")
        if not existing.is_dir():
            return ("exists and is not a folder" if existing == folder.absolute()
                    else f"cannot be made: {existing} exists and is not a folder")
        if writable:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".flux-perf-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as error:
        return f"is not writable: {os_reason(error)}"
    return None


def os_reason(error: OSError) -> str:
    """The OS error as a user reads it: its message and code name ("No space left on device
    (ENOSPC)"), never the raw "[Errno 28] ...: '.results.json.tmp-123'"."""
    name = errno.errorcode.get(error.errno or 0, "")
    return f"{error.strerror or error}" + (f" ({name})" if name else "")


def os_error_line(error: OSError) -> str:
    """One line for an OSError from a write outside the report (a --json file): the folder of an
    atomic write's temporary file (what the user named is the folder), the error and its code."""
    reason = os_reason(error)
    if not error.filename:
        return reason
    path = Path(os.fsdecode(error.filename))
    where = f"in {shown(path.parent)}" if ".tmp-" in path.name else shown(path)
    return f"cannot write or read {where}: {reason}"
