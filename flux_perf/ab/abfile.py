"""Reading an `ab --json` file back (`flux-perf ab-pairs`): its version and every value checked
before anything is judged, each error naming the file, the key and the value."""

from __future__ import annotations

import json
from pathlib import Path

from ..store.files import non_negative_number, positive_number
from .worker import AbError

VERSIONS = (1, 2)  # flux_perf_ab: 1 a verdict per block, 2 a verdict per case (files of version 1 may lack it)
# Later version-2 files add "not_decidable" (what the suite left that no A/B decides): no reader here needs it.
_REDO = "fix it or record the file again with `flux-perf ab --json`"


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, value, expected: str):
        raise AbError(f"{self.path}: {key} = {json.dumps(value)[:80]}: expected {expected}; {_REDO}")

    def kind(self, key: str, value, types: tuple, expected: str, optional: bool = False):
        if not (isinstance(value, types) or (optional and value is None)):
            self.fail(key, value, expected)
        return value

    def optional_number(self, key: str, value, positive: bool = False) -> None:
        if value is not None and not (positive_number if positive else non_negative_number)(value):
            self.fail(key, value, "a finite number" + (" above 0" if positive else " of at least 0") + " or null")

    def rounds(self, key: str, value, pairs: int | None = None) -> int:
        self.kind(key, value, (list,), "a list of seconds")
        if not value or (pairs is not None and len(value) != pairs):
            self.fail(key, value, f"{pairs or 'at least 1'} rounds (one per pair)")
        for i, seconds in enumerate(value):
            if not positive_number(seconds):
                self.fail(f"{key}[{i}]", seconds, "a round's seconds: a finite number above 0")
        return len(value)

    def block(self, key: str, block) -> None:
        self.kind(key, block, (dict,), "an object with base_s and head_s")
        pairs = self.rounds(f"{key}.base_s", block.get("base_s"))
        self.rounds(f"{key}.head_s", block.get("head_s"), pairs)
        control = self.kind(f"{key}.control", block.get("control"), (dict,), "an object with control_s or null", True)
        if control is not None:
            self.rounds(f"{key}.control.control_s", control.get("control_s"), pairs)
        for name in ("seconds", "host_cpu_stall", "host_cpu_steal"):
            self.optional_number(f"{key}.{name}", block.get(name))

    def case(self, key: str, case) -> None:
        self.kind(key, case, (dict,), "an object (one case)")
        for name in ("stack", "scenario"):
            self.kind(f"{key}.{name}", case.get(name), (str,), "a string")
        for name in ("base", "head"):
            self.kind(f"{key}.{name}", case.get(name), (dict,), "an object or null", True)
        self.optional_number(f"{key}.prepare_s", case.get("prepare_s"))
        blocks = self.kind(f"{key}.blocks", case.get("blocks"), (list,), "a list of blocks")
        for i, block in enumerate(blocks):
            self.block(f"{key}.blocks[{i}]", block)
        # The control's rounds pair with base's block by block: in some blocks only, they would not.
        with_control = [i for i, block in enumerate(blocks) if block.get("control") is not None]
        if with_control and len(with_control) != len(blocks):
            first_without = next(i for i in range(len(blocks)) if i not in with_control)
            self.fail(f"{key}.blocks[{first_without}].control", None,
                      f"a control, as in blocks {with_control} (every block has one, or none)")

    def settings(self, settings) -> None:
        self.kind("settings", settings, (dict,), "an object or null", True)
        settings = settings or {}
        inject = self.kind("settings.inject", settings.get("inject"), (dict,), "an object or null", True) or {}
        for side in ("base", "head"):
            self.optional_number(f"settings.inject.{side}", inject.get(side))
        self.optional_number("settings.control", settings.get("control"))


def load_ab_file(path: Path) -> dict:
    """The file's data, every value the readers use checked; AbError names what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise AbError(f"{path}: cannot read it ({error.strerror or error})") from None
    except ValueError as error:
        raise AbError(f"{path}: not an `flux-perf ab --json` file (not JSON: {error})") from None
    if not isinstance(data, dict) or "cases" not in data:
        raise AbError(f"{path}: not an `flux-perf ab --json` file (no \"cases\" in it)")
    version = data.get("flux_perf_ab", 1)
    if type(version) is not int or version not in VERSIONS:
        raise AbError(f"{path}: flux_perf_ab = {json.dumps(version)}: this flux-perf reads versions "
                      f"{' and '.join(map(str, VERSIONS))} of `flux-perf ab --json` files (a newer flux-perf wrote it?)")
    checker = _Checker(Path(path))
    checker.settings(data.get("settings"))
    for i, case in enumerate(checker.kind("cases", data["cases"], (list,), "a list of cases")):
        checker.case(f"cases[{i}]", case)
    return data
