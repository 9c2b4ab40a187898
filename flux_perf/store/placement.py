"""What a store file says it was made for (GPU, weights, model, stack, scenario), checked against
the folder and case it is read for: a file copied from another folder, or edited, would otherwise
gate a case it was never made for. Each mismatch names the file, the field, its value and the
expected one."""

from __future__ import annotations

from pathlib import Path

from ..components.stacks import BASELINE
from ..model.scenarios import Scenario
from .entries import UPDATE_HINT, BaselineMismatch, CalibrationEntry

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
                               "flux-perf calibrate --write")
    return entry
