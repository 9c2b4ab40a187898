"""The typed entries of the baseline store, checked when read so no nonsense gates anything:
a stack's recorded latency and fidelity, the fidelity calibration of a scenario (the lossless
band and each stack's spread), each with the provenance it was recorded under.

Every file of the store carries `flux_perf_store` (its schema version); a file of another
version is refused with what to do (`flux-perf baselines migrate` converts version 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .files import finite_number
from .provenance import Provenance

SCHEMA_KEY = "flux_perf_store"
SCHEMA_VERSION = 2
UPDATE_HINT = "flux-perf baselines update   (or: pytest -m h100 --flux-update-baselines)"


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


def _positive(value) -> bool:
    return finite_number(value) and value > 0


def _non_negative(value) -> bool:
    return finite_number(value) and value >= 0


def _fraction(value) -> bool:
    return finite_number(value) and -1 <= value <= 1


def _object(entry, where: str) -> dict:
    if not isinstance(entry, dict):
        raise BaselineCorrupt(f"{where} is a {type(entry).__name__}, not an object. Re-record with: {UPDATE_HINT}")
    return entry


def _provenance(entry: dict) -> Provenance:
    raw = entry.get("provenance")
    return Provenance.from_json(raw if isinstance(raw, dict) else {})


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
        if not _positive(entry.get("median_s")):
            raise BaselineCorrupt(f"{where}: median_s={entry.get('median_s')!r} is not a positive number of seconds. "
                                  f"Re-record with: {UPDATE_HINT}")
        samples = entry.get("samples_s") or []
        if not (isinstance(samples, list) and all(_positive(s) for s in samples)):
            raise BaselineCorrupt(f"{where}: samples_s must be a list of positive seconds, got {samples!r:.80}. "
                                  f"Re-record with: {UPDATE_HINT}")
        clock = entry.get("sm_clock_mhz")
        return cls(float(entry["median_s"]), tuple(float(s) for s in samples), str(entry.get("stack") or ""),
                   _provenance(entry), entry.get("ci_low_s"), entry.get("ci_high_s"),
                   float(clock) if _positive(clock) else None, entry.get("measurement_version"))

    def to_json(self) -> dict:
        data = asdict(self)
        data["samples_s"] = list(self.samples_s)
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
        if psnr is not None and not _positive(psnr):
            raise BaselineCorrupt(f"{where}: psnr={psnr!r} is not a positive number of dB (null: identical)")
        if distance is not None and not _non_negative(distance):
            raise BaselineCorrupt(f"{where}: latent_rel_l2={distance!r} is not a distance >= 0")
        return cls(float(entry["ssim"]), psnr, distance, entry.get("image_sha256"), str(entry.get("stack") or ""),
                   bool(entry.get("lossless")), _provenance(entry), entry.get("latents_sha256"))

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
            raise BaselineCorrupt(f"{where}: needs a `band` object with an SSIM; re-run flux-perf calibrate --write")
        for name in ("psnr", "latent_rel_l2"):
            if band.get(name) is not None and not _positive(band[name]):
                raise BaselineCorrupt(f"{where}: band.{name}={band[name]!r} is not a positive number")
        spread = entry.get("spread") or {}
        if not isinstance(spread, dict) or not all(
                isinstance(s, dict) and all(_non_negative(v) for v in s.values()) for s in spread.values()):
            raise BaselineCorrupt(f"{where}: spread must map stack -> metric -> a number >= 0, got {spread!r:.120}")
        stacks = entry.get("stacks") if isinstance(entry.get("stacks"), dict) else {}
        details = {k: v for k, v in entry.items() if k not in ("band", "spread", "stacks", "provenance")}
        return cls(Band(float(band["ssim"]), band.get("psnr"), band.get("latent_rel_l2")),
                   {name: Spread(**{k: float(v) for k, v in s.items() if k in ("ssim", "psnr", "latent_rel_l2")})
                    for name, s in spread.items()}, dict(stacks), _provenance(entry), details)

    def to_json(self) -> dict:
        return {**self.details, "band": asdict(self.band), "spread": {k: asdict(v) for k, v in self.spread.items()},
                "stacks": dict(self.stacks), "provenance": self.provenance.to_json()}


def check_schema(data, path) -> dict:
    """The entries of a store file of this schema; another version is a clear error."""
    if not isinstance(data, dict):
        raise BaselineCorrupt(f"{path} is a JSON {type(data).__name__}, not an object. Re-record with: {UPDATE_HINT}")
    version = data.get(SCHEMA_KEY)
    if version != SCHEMA_VERSION:
        found = "no schema version (written before flux-perf versioned its store: version 1)" if version is None \
            else f"schema version {version!r}"
        raise SchemaError(f"{path} has {found}; this flux-perf reads version {SCHEMA_VERSION}. Convert it with "
                          f"`flux-perf baselines migrate {path.parent}` or re-record it with: {UPDATE_HINT}")
    return data
