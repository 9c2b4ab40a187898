from pathlib import Path

import pytest

from flux_perf.budgets import BudgetsError, load_budgets

COMMITTED = Path(__file__).resolve().parent.parent / "baselines" / "budgets.toml"
H100 = "NVIDIA H100 80GB HBM3"


def test_committed_budgets_hold_the_guides_table_for_fast():
    budgets = load_budgets(COMMITTED)
    table = {s: budgets.latency_budget(H100, s, "fast", None).seconds
             for s in ("512x512@6", "768x768@6", "1024x1024@8", "512x512@4")}
    assert table == {"512x512@6": 0.5, "768x768@6": 0.8, "1024x1024@8": 1.2, "512x512@4": 0.3}


def test_relative_and_missing_budgets():
    budgets = load_budgets(COMMITTED)
    relative = budgets.latency_budget(H100, "512x512@6", "compile", {"median_s": 0.5, "samples_s": [0.5, 0.51]})
    assert relative.kind == "relative" and relative.seconds == pytest.approx(0.5 * (1 + budgets.relative_tolerance))
    assert relative.recorded_samples == (0.5, 0.51)
    assert budgets.latency_budget("NVIDIA A100-SXM4-80GB", "512x512@6", "fast", None) is None
    assert budgets.latency_budget(H100, "640x640@6", "compile", None) is None


def test_floors():
    budgets = load_budgets(COMMITTED)
    assert budgets.ssim_floor("bf16", True)[0] == 0.9999
    assert budgets.ssim_floor("my-new-stack", True) == (budgets.lossless_default, "lossless default")
    assert budgets.ssim_floor("my-lossy-stack", False) == (budgets.lossy_default, "lossy default")


@pytest.mark.parametrize("text, message", [
    ("[latency\nrelative_tolerance = 0.03", "not valid TOML"),
    ("[latency]\nrelative_tolerance = 'three'", "relative_tolerance = 'three'"),
    ("[latency]\nrelative_tolerence = 0.03", "unknown key"),
    ("[latency.absolute.\"GPU\"]\n\"512x512@6\" = { fast = -1 }", "fast = -1"),
    ("[fidelity.ssim]\nfp8 = 2", "fidelity.ssim.fp8 = 2"),
    ("[budgets]\n", "unknown key"),
])
def test_malformed_budgets_name_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    with pytest.raises(BudgetsError, match=message):
        load_budgets(path)


def test_missing_file(tmp_path):
    with pytest.raises(BudgetsError, match="does not exist"):
        load_budgets(tmp_path / "budgets.toml")
