"""The typed entries of the baseline store, checked when read so no nonsense gates anything:
a stack's recorded latency and fidelity, the fidelity calibration of a scenario (the lossless
band and each stack's spread), each with the provenance it was recorded under.

Every file of the store carries `flux_perf_store` (its schema version); a file of another
version is refused with what to do (`flux-perf baselines migrate` converts version 1).
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
from dataclasses import asdict, dataclass, field

from .files import finite_number, non_negative_number, positive_number
from .provenance import Provenance

SCHEMA_KEY = "flux_perf_store"
SCHEMA_VERSION = 2
UPDATE_HINT = "flux-perf baselines update   (or: pytest -m h100 --flux-update-baselines)"
CALIBRATE_HINT = "flux-perf calibrate --write"  # a run replaces it with its own command (store/references.py)
# A recorded median may differ from its rounds' median by this fraction: float text read back.
MEDIAN_REL_TOL = 1e-6


class BaselineError(Exception):
    """Base of every baseline problem; the message says which problem and what to do."""


class BaselineCorrupt(BaselineError):
    pass


class BaselineMismatch(BaselineError):
    pass


class SchemaError(BaselineCorrupt):
    """A store file written by a flux-perf of another schema version."""


class UpdateRefused(BaselineError):
    pass


def _fraction(value) -> bool:
    return finite_number(value) and -1 <= value <= 1


def _object(entry, where: str) -> dict:
    if not isinstance(entry, dict):
        raise BaselineCorrupt(f"{where} is a {type(entry).__name__}, not an object. Re-record with: {UPDATE_HINT}")
    return entry


def _bad(where: str, key: str, value, expected: str) -> BaselineCorrupt:
    """One message style for a wrongly typed value: the file and entry, the key, what was found,
    what is expected, and the command that re-records it."""
    return BaselineCorrupt(f"{where}: {key}={value!r:.80} is not {expected}. Re-record with: {UPDATE_HINT}")


def _text(value) -> bool:
    return value is None or isinstance(value, str)


def _iso_date(value) -> bool:
    try:
        _dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def checked_provenance(entry: dict, where: str) -> Provenance:
    """The entry's provenance, every field checked: a list `software` or a date of "high" would
    otherwise be shown, or compared, as if it were one."""
    raw = entry.get("provenance", {})
    if not isinstance(raw, dict):
        raise _bad(where, "provenance", raw, "an object")
    for key in ("commit", "uncommitted", "source", "driver"):
        if not _text(raw.get(key)):
            raise _bad(where, f"provenance.{key}", raw[key], "a string or null")
    if raw.get("recorded_at") not in (None, "") and not _iso_date(raw["recorded_at"]):  # "": not known
        raise _bad(where, "provenance.recorded_at", raw["recorded_at"], "an ISO date (2026-11-26T06:00:30+00:00)")
    software, components = raw.get("software", {}), raw.get("components", {})
    if not isinstance(software, dict) or not all(_text(v) or finite_number(v) for v in software.values()):
        raise _bad(where, "provenance.software", software, "an object of package -> version")
    if not isinstance(components, dict) or not all(isinstance(v, str) for v in components.values()):
        raise _bad(where, "provenance.components", components, "an object of component -> code hash")
    return Provenance.from_json(raw)


def _optional(entry: dict, where: str, key: str, check, expected: str):
    """entry[key] when it is absent, null or passes `check`; anything else is an error naming it."""
    value = entry.get(key)
    if value is not None and not check(value):
        raise _bad(where, key, value, expected)
    return value


def _check_median(where: str, median: float, samples: list, listed: bool, low, high) -> None:
    """A median its own rounds or interval contradict is no reference: the gate judges the rounds
    but states the median (5 s recorded over rounds of 0.5 s read "over budget 5.150 s"), and
    without rounds judges the median alone. An empty list is a median of no rounds."""
    fix = f"the entry contradicts itself (edited?). Re-record with: {UPDATE_HINT}"
    if listed and not samples:
        raise BaselineCorrupt(f"{where}: samples_s=[] holds no round for median_s={median!r}: {fix}")
    if samples and not math.isclose(median, middle := statistics.median(samples), rel_tol=MEDIAN_REL_TOL):
        raise BaselineCorrupt(f"{where}: median_s={median!r} is not the median of its samples_s ({middle!r} over "
                              f"{len(samples)} rounds): {fix}")
    slack = median * MEDIAN_REL_TOL
    if (low is not None and low > median + slack) or (high is not None and high < median - slack):
        raise BaselineCorrupt(f"{where}: the interval ci_low_s={low!r} .. ci_high_s={high!r} does not hold "
                              f"median_s={median!r}: {fix}")


@dataclass(frozen=True)
class LatencyEntry:
    """A stack's recorded rounds at one scenario: what its latency gate compares against."""

    median_s: float
    samples_s: tuple[float, ...]
    stack: str  # the stack's components (its key) when recorded
    provenance: Provenance
    ci_low_s: float | None = None
    ci_high_s: float | None = None
    sm_clock_mhz: float | None = None
    measurement_version: int | None = None

    @classmethod
    def from_json(cls, entry, where: str) -> LatencyEntry:
        entry = _object(entry, where)
        if not positive_number(entry.get("median_s")):
            raise BaselineCorrupt(f"{where}: median_s={entry.get('median_s')!r} is not a positive number of seconds. "
                                  f"Re-record with: {UPDATE_HINT}")
        samples = [] if entry.get("samples_s") is None else entry["samples_s"]  # absent: recorded without rounds
        if not (isinstance(samples, list) and all(positive_number(s) for s in samples)):
            raise BaselineCorrupt(f"{where}: samples_s must be a list of positive seconds, got {samples!r:.80}. "
                                  f"Re-record with: {UPDATE_HINT}")
        low, high = (_optional(entry, where, k, positive_number, "a positive number of seconds")
                     for k in ("ci_low_s", "ci_high_s"))
        _check_median(where, entry["median_s"], samples, entry.get("samples_s") is not None, low, high)
        clock = _optional(entry, where, "sm_clock_mhz", non_negative_number, "a clock in MHz")
        version = _optional(entry, where, "measurement_version", lambda v: type(v) is int, "an integer")
        stack = _optional(entry, where, "stack", lambda v: isinstance(v, str), "a string")
        return cls(float(entry["median_s"]), tuple(float(s) for s in samples), stack or "", checked_provenance(entry, where),
                   low, high, float(clock) if positive_number(clock) else None, version)

    def to_json(self) -> dict:
        data = asdict(self)
        data["samples_s"] = list(self.samples_s)
        if not self.samples_s:  # a reference without its rounds has no key, as schema 1 wrote it
            del data["samples_s"]
        data["provenance"] = self.provenance.to_json()
        return data


@dataclass(frozen=True)
class FidelityEntry:
    """A stack's output against the bf16 baseline as the last sanctioned update measured it."""

    ssim: float
    psnr: float | None  # None: identical images
    latent_rel_l2: float | None
    image_sha256: str | None
    stack: str
    lossless: bool
    provenance: Provenance
    latents_sha256: str | None = None  # the stack's own final latents, kept beside the entry

    @classmethod
    def from_json(cls, entry, where: str) -> FidelityEntry:
        entry = _object(entry, where)
        if not _fraction(entry.get("ssim")):
            raise BaselineCorrupt(f"{where}: needs an ssim in [-1, 1], got {entry.get('ssim')!r}. "
                                  f"Re-record with: {UPDATE_HINT}")
        psnr, distance = entry.get("psnr"), entry.get("latent_rel_l2")
        if psnr is not None and not positive_number(psnr):
            raise _bad(where, "psnr", psnr, "a positive number of dB (null: identical)")
        # An explicit null is "identical", and identical images have an SSIM of exactly 1.
        if "psnr" in entry and psnr is None and float(entry["ssim"]) < 1:
            raise BaselineCorrupt(f"{where}: psnr null says the images are identical, but ssim is {entry['ssim']!r}. "
                                  f"Re-record with: {UPDATE_HINT}")
        if distance is not None and not non_negative_number(distance):
            raise _bad(where, "latent_rel_l2", distance, "a distance >= 0")
        hashes = [_optional(entry, where, k, lambda v: isinstance(v, str), "a sha256 string")
                  for k in ("image_sha256", "latents_sha256")]
        stack = _optional(entry, where, "stack", lambda v: isinstance(v, str), "a string")
        lossless = _optional(entry, where, "lossless", lambda v: isinstance(v, bool), "true or false")
        return cls(float(entry["ssim"]), psnr, distance, hashes[0], stack or "", bool(lossless),
                   checked_provenance(entry, where), hashes[1])

    def to_json(self) -> dict:
        return {**asdict(self), "provenance": self.provenance.to_json()}


@dataclass(frozen=True)
class Band:
    """The lossless band: how far exact-math variants of bf16 move the output, with a margin."""

    ssim: float
    psnr: float | None = None
    latent_rel_l2: float | None = None


@dataclass(frozen=True)
class Spread:
    """How far a stack's fidelity moved between fresh builds."""

    ssim: float = 0.0
    psnr: float = 0.0
    latent_rel_l2: float = 0.0


@dataclass(frozen=True)
class CalibrationEntry:
    """`flux-perf calibrate` for one scenario: the band, each stack's spread and the stack key it
    was measured on, and the measurements behind them (kept for `calibrate --restate`)."""

    band: Band
    spread: dict[str, Spread]
    stacks: dict[str, str]  # stack name -> its key when its spread was measured
    provenance: Provenance
    details: dict = field(default_factory=dict)  # margin, rule, separation, every variant's distances

    @classmethod
    def from_json(cls, entry, where: str) -> CalibrationEntry:
        entry = _object(entry, where)
        band = entry.get("band")
        if not isinstance(band, dict) or not _fraction(band.get("ssim")):
            raise BaselineCorrupt(f"{where}: needs a `band` object with an SSIM; re-run {CALIBRATE_HINT}")
        for name in ("psnr", "latent_rel_l2"):
            if band.get(name) is not None and not positive_number(band[name]):
                raise _bad(where, f"band.{name}", band[name], "a positive number")
        spread = entry.get("spread") or {}
        if not isinstance(spread, dict) or not all(
                isinstance(s, dict) and all(non_negative_number(v) for v in s.values()) for s in spread.values()):
            raise BaselineCorrupt(f"{where}: spread must map stack -> metric -> a number >= 0, got {spread!r:.120}")
        stacks = _optional(entry, where, "stacks", lambda v: isinstance(v, dict) and all(
            isinstance(k, str) for k in v.values()), "an object of stack -> components") or {}
        details = {k: v for k, v in entry.items() if k not in ("band", "spread", "stacks", "provenance")}
        return cls(Band(float(band["ssim"]), band.get("psnr"), band.get("latent_rel_l2")),
                   {name: Spread(**{k: float(v) for k, v in s.items() if k in ("ssim", "psnr", "latent_rel_l2")})
                    for name, s in spread.items()}, dict(stacks), checked_provenance(entry, where), details)

    def to_json(self) -> dict:
        return {**self.details, "band": asdict(self.band), "spread": {k: asdict(v) for k, v in self.spread.items()},
                "stacks": dict(self.stacks), "provenance": self.provenance.to_json()}


def check_schema(data, path) -> dict:
    """The entries of a store file of this schema; another version is a clear error."""
    if not isinstance(data, dict):
        raise BaselineCorrupt(f"{path} is a JSON {type(data).__name__}, not an object. Re-record with: {UPDATE_HINT}")
    version = data.get(SCHEMA_KEY)
    if version is None:
        raise SchemaError(f"{path} has no schema version (written before flux-perf versioned its store: version 1); "
                          f"this flux-perf reads version {SCHEMA_VERSION}. Convert it with "
                          f"`flux-perf baselines migrate {path.parent}` or re-record it with: {UPDATE_HINT}")
    if version != SCHEMA_VERSION:  # migrate converts version 1 only: naming it here sent users to a refusal
        raise SchemaError(f"{path} has schema version {version!r}; this flux-perf reads version {SCHEMA_VERSION} "
                          "and converts only version 1 (`baselines migrate`): read it with the flux-perf that wrote "
                          f"it, or re-record it with: {UPDATE_HINT}")
    return data
