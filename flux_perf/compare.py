"""Compare two runs' results.json: per case, the change with a statistical verdict."""

from __future__ import annotations

import json
from pathlib import Path

from .stats import Change, compare_samples


class ResultsError(ValueError):
    """A results.json that is missing, not JSON, or not written by flux-perf."""


def read_results(path: str | Path) -> dict:
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not JSON ({error})") from None
    if not isinstance(payload, dict) or "records" not in payload:
        raise ResultsError(f"{path} is not a flux-perf results.json (no 'records')")
    return payload


def load_results(path: str | Path) -> dict[str, list[float]]:
    """case id -> wall-time samples (s) from a flux-perf results.json."""
    return {r["id"]: r["wall_samples_s"] for r in read_results(path)["records"] if r.get("wall_samples_s")}


def compare_runs(base: dict[str, list[float]], head: dict[str, list[float]], tolerance: float) -> list[dict]:
    rows = []
    for case in sorted(set(base) | set(head)):
        if case not in base or case not in head:
            rows.append({"id": case, "change": "only in " + ("head" if case in head else "base")})
            continue
        comparison = compare_samples(base[case], head[case], tolerance=tolerance)
        rows.append({"id": case, "base_median_s": sorted(base[case])[len(base[case]) // 2],
                     "head_median_s": sorted(head[case])[len(head[case]) // 2], **comparison.to_dict()})
    return rows


def format_rows(rows: list[dict], tolerance: float) -> str:
    lines = [f"{'case':<34} {'base s':>8} {'head s':>8} {'change':>8}  95% CI of ratio   verdict (tolerance {tolerance:.0%})"]
    for row in rows:
        if "ratio" not in row:
            lines.append(f"{row['id']:<34} {'':>8} {'':>8} {'':>8}  {'':<16}  {row['change']}")
            continue
        lines.append(
            f"{row['id']:<34} {row['base_median_s']:>8.3f} {row['head_median_s']:>8.3f} {row['ratio'] - 1:>+8.1%}"
            f"  {row['ratio_low']:.3f}-{row['ratio_high']:.3f}      {row['change']}"
        )
    return "\n".join(lines)


def has_regression(rows: list[dict]) -> bool:
    return any(row.get("change") == Change.SLOWER.value for row in rows)
