"""Helpers shared by the CPU tests."""

from pathlib import Path


COMMITTED_BUDGETS = Path(__file__).resolve().parent.parent / "baselines" / "budgets.toml"


def copy_budgets(folder: Path, relative_tolerance: float = 1.0) -> Path:
    """The committed budgets, with a tolerance wide enough that CPU timing noise cannot fail the
    plumbing tests that use it (the gate itself is tested on synthetic samples)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = COMMITTED_BUDGETS.read_text()
    lines = [f"relative_tolerance = {relative_tolerance}" if line.startswith("relative_tolerance") else line
             for line in text.splitlines()]
    path = folder / "budgets.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
