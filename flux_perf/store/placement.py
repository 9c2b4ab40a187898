"""What a store file says it was made for (GPU, weights, model, stack, scenario), checked against
the folder and case it is read for: a file copied from another folder, or edited, would otherwise
gate a case it was never made for. Each mismatch names the file, the field, its value and the
expected one. Table entries (latency, fidelity, calibration) say where they were recorded since
an audit found a copied GPU folder's latency judged as this card's; older ones are judged by the
bf16 record beside them."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..components.stacks import BASELINE
from ..model.scenarios import Scenario
from .entries import CALIBRATE_HINT, UPDATE_HINT, BaselineError, BaselineMismatch, CalibrationEntry

BUILT_IN = ("synthetic", "tiny")  # model labels that name their kind; any other is a checkpoint's path or hub id


def _model_kind(label) -> str:
    return label if label in BUILT_IN else "pretrained"


def _mismatches(record: dict, gpu_slug: str, fingerprint: str) -> list[tuple[str, object, object]]:
    """(field, the file's value, the expected one) for each field the record states wrongly."""
    gpu = record.get("gpu") if isinstance(record.get("gpu"), dict) else {}
    wrong = [(name, value, expected) for name, value, expected in (
        ("gpu_slug", record.get("gpu_slug"), gpu_slug), ("gpu.slug", gpu.get("slug"), gpu_slug),
        ("stack", record.get("stack"), BASELINE)) if value is not None and value != expected]
    kind = fingerprint.partition("-")[0]  # synthetic-..., tiny-..., pretrained-...
    if "model" in record and kind in (*BUILT_IN, "pretrained") and _model_kind(record["model"]) != kind:
        wrong.append(("model", record["model"], kind if kind in BUILT_IN else "a checkpoint's folder or hub id"))
    return wrong


def check_record(record: dict, path: Path, gpu_slug: str, fingerprint: str) -> None:
    """A bf16 baseline record made for this GPU model, these weights and as bf16's."""
    if record.get("fingerprint") != fingerprint:
        raise BaselineMismatch(f"baseline {path} was made with weights {record.get('fingerprint')!r}, "
                               f"this run uses {fingerprint!r}")
    for name, value, expected in _mismatches(record, gpu_slug, fingerprint):
        raise BaselineMismatch(f"baseline {path} was made with {name}={value!r}, its folder {gpu_slug}/{fingerprint} "
                               f"expects {name}={expected!r}: copied from another folder or edited. Re-create it "
                               f"with: {UPDATE_HINT}")


def check_scenario(record: dict, path: Path, scenario: Scenario) -> None:
    """The scenario the record says it was made with is the one asked for."""
    recorded = record.get("scenario") if isinstance(record.get("scenario"), dict) else {}
    for name in ("steps", "seed", "guidance", "height", "width", "id"):
        if name in recorded and recorded[name] != getattr(scenario, name):
            raise BaselineMismatch(f"baseline {path} was made with {name}={recorded[name]}, the scenario "
                                   f"has {name}={getattr(scenario, name)}")


def check_calibration(entry: CalibrationEntry, where: str, place: str) -> CalibrationEntry:
    """A calibration measured against a stored baseline names it (`stored baseline GPU/WEIGHTS/
    SCENARIO`): another place than the one it is read for is a band of other weights or GPU."""
    reference = entry.details.get("reference")
    prefix = "stored baseline "
    if isinstance(reference, str) and reference.startswith(prefix) and reference[len(prefix):] != place:
        raise BaselineMismatch(f"{where}: reference={reference!r}, this entry lies at {place!r}: measured for "
                               "another GPU, weights or scenario (copied or edited). Calibrate again with: "
                               f"{CALIBRATE_HINT}")
    return entry


class Bf16Record(NamedTuple):
    """A scenario's bf16 record read once (`data` None: absent or unreadable, `error`: why not),
    and its path: one case's reads share it (the image's, and each table's placement check)."""

    data: dict | None
    error: BaselineError | None
    path: Path


class Place(NamedTuple):
    """Where something was recorded; None where a file does not say."""

    gpu_name: str | None
    gpu_slug: str | None
    fingerprint: str | None


def place_of(record: dict) -> Place:
    """Where a bf16 record or a stamped table entry says it was recorded."""
    gpu = record.get("gpu")
    name = gpu.get("name") if isinstance(gpu, dict) else gpu
    slug = record.get("gpu_slug") or (gpu.get("slug") if isinstance(gpu, dict) else None)
    return Place(*(v if isinstance(v, str) else None for v in (name, slug, record.get("fingerprint"))))


def _elsewhere(place: Place, here: Place) -> bool:
    """Another GPU or weights than `here` (the GPU's name is shown, not compared: the slug is made from it)."""
    return any(value is not None and value != expected
               for value, expected in ((place.gpu_slug, here.gpu_slug), (place.fingerprint, here.fingerprint)))


def _shown(place: Place) -> str:
    name, slug, weights = place
    return (f"GPU {name!r} ({slug})" if name and name != slug else f"GPU {slug}") + f" with weights {weights}"


def copied_from(old: dict | None, gpu_slug: str, fingerprint: str) -> dict | None:
    """What a bf16 record about to be replaced says of a copy: the place it (or the record it replaced)
    was recorded at when that is another GPU or weights. Kept in the new record, because the
    unstamped table entries that came with the copy stay beside it (check_entry_place)."""
    if not isinstance(old, dict):
        return None
    if isinstance(old.get("replaced_copy"), dict):
        return old["replaced_copy"]
    place = place_of(old)
    if not _elsewhere(place, Place(None, gpu_slug, fingerprint)):
        return None
    return {"gpu": place.gpu_name, "gpu_slug": place.gpu_slug, "fingerprint": place.fingerprint}


def check_entry_place(entry, where: str, here: Place, record: dict | None, record_path: Path) -> None:
    """A latency, fidelity or calibration entry read for `here` (this run's GPU name, the folder's
    GPU slug and weights) that was recorded elsewhere: judging against it compares with another
    card's (or weights') numbers. Entries say where they were recorded since this check; older
    ones are judged by the scenario's bf16 `record` beside them (the folder copied whole).
    `where`: FILE [SCENARIO][NAME]."""
    fix = f"Record this machine's own with: {UPDATE_HINT}"
    stamped = place_of(entry) if isinstance(entry, dict) else Place(None, None, None)
    if any(stamped[1:]):
        if _elsewhere(stamped, here):
            raise BaselineMismatch(f"{where}: recorded on {_shown(stamped)}, read for {_shown(here)} (folder "
                                   f"{here.gpu_slug}/{here.fingerprint}): copied from another GPU's or weights' folder, or edited; "
                                   f"its numbers are another machine's. {fix}")
        return
    for place, how in (place_of(record or {}), "was recorded on"), \
            (place_of((record or {}).get("replaced_copy") or {}), "replaced one recorded on"):
        if _elsewhere(place, here):
            raise BaselineMismatch(f"{where.rpartition('][')[0]}]: its entries name no GPU or weights (recorded "
                                   f"before entries said so), and the bf16 baseline beside them ({record_path.name}) "
                                   f"{how} {_shown(place)}, not "
                                   f"{_shown(here)}: the folder came from another GPU or weights; its numbers are "
                                   f"another machine's. {fix}")
