"""What the installed plugin claims: nothing in a project that did not ask for flux-perf (its own
`h100` marker stays its own), marker expressions read as pytest reads them, and the baselines
found from the project, not from an option's value that pytest took for a test path.

The foreign projects run in a subprocess from a temporary folder; helpers.run_pytest puts this
checkout first on PYTHONPATH, so the pytest11 entry point loads this checkout's plugin (each
project's first test asserts that)."""

import pytest
from helpers import ROOT, copy_budgets, run_pytest

from flux_perf.plugin.scope import marker_selects


@pytest.mark.parametrize("expression, selects", [
    ("h100", True), ("h100 or slow", True), ("h100 and fidelity", True), ("(h100)", True),
    ("not slow and h100", True),
    ("not(h100)", False), ("not  h100", False), ("not h100", False), ("h1000", False), ("xh100", False),
    ("not slow", False), ("", False), ("h100 and not h100", False), ("h100 or", False),
])
def test_marker_expressions_are_evaluated_not_searched(expression, selects):
    assert marker_selects(expression) is selects


FOREIGN_INI = """[pytest]
markers =
    h100: this project's own GPU tests, not flux-perf's
    h1000: another marker of this project
"""
FOREIGN_TESTS = f"""import sys
import pytest

def test_cpu():
    assert sys.modules["flux_perf.plugin"].__file__.startswith({str(ROOT)!r}), "not this checkout's plugin"

@pytest.mark.h100
def test_own_gpu():
    pass

@pytest.mark.h1000
def test_other():
    pass
"""


@pytest.fixture
def foreign(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text(FOREIGN_INI)
    (project / "test_own.py").write_text(FOREIGN_TESTS)
    return project


def test_a_project_with_its_own_h100_marker_is_left_alone(foreign):
    plain = run_pytest("-rs", cwd=foreign)
    assert plain.returncode == 0 and "3 passed" in plain.stdout, plain.stdout[-2000:] + plain.stderr[-2000:]
    assert "GPU suite" not in plain.stdout, "flux-perf skipped the project's own h100 test"
    selected = run_pytest("-m", "h100", cwd=foreign)
    assert selected.returncode == 0 and "1 passed, 2 deselected" in selected.stdout, \
        selected.stdout[-2000:] + selected.stderr[-2000:]
    assert "flux-perf" not in selected.stderr and "ran no GPU case" not in selected.stdout
    markers = run_pytest("--markers", cwd=foreign).stdout
    assert "this project's own GPU tests" in markers and "full-size model" not in markers


@pytest.mark.parametrize("expression, outcome", [
    ("not(h100)", "2 passed, 1 deselected"), ("not  h100", "2 passed, 1 deselected"), ("h1000", "1 passed, 2 deselected"),
])
def test_an_expression_that_selects_no_gpu_test_is_not_a_gpu_run(foreign, expression, outcome):
    """Asked for (a --flux-* option given), flux-perf fails a GPU run that ran no GPU case; these
    expressions select none, so nothing is failed for it."""
    result = run_pytest("-m", expression, f"--flux-report-dir={foreign / 'report'}",
                        f"--flux-baselines-dir={ROOT / 'baselines'}", cwd=foreign)
    assert result.returncode == 0 and outcome in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ran no GPU case" not in result.stdout


def test_a_test_using_flux_fixtures_is_flux_perfs_anywhere(foreign):
    (foreign / "test_flux.py").write_text("import pytest\n\n@pytest.mark.h100\n"
                                         "def test_flux(flux_session):\n    pass\n")
    result = run_pytest("-rs", "test_flux.py", cwd=foreign)
    assert result.returncode == 0 and "GPU suite: selected only with `pytest -m h100`" in result.stdout, \
        result.stdout[-2000:]


def test_the_space_form_of_an_option_does_not_move_the_baselines(tmp_path):
    """`pytest -m h100 --flux-report-dir DIR` with DIR an existing folder outside the checkout and
    no test path: pytest takes DIR for a test path when it picks its rootdir (flux-perf's options
    are not known yet); the baselines are still the checkout's."""
    report = tmp_path / "report"
    report.mkdir()  # a later run: the folder exists
    result = run_pytest("-m", "h100", "--flux-report-dir", str(report), "--flux-device", "cpu", "--flux-model", "tiny",
                        "--flux-stacks", "bf16", "--flux-scenarios", "64x64@2", "--co")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "budgets file" not in result.stderr and "test_latency_budget[bf16-64x64@2]" in result.stdout
    # pytest's rootdir is the report folder or an ancestor shared with the invocation folder
    # (/tmp when the checkout is under /tmp too): either way not the checkout, and said so.
    assert "pytest took its rootdir /" in result.stdout and "from an option's value" in result.stdout
    assert f"baselines are looked up from {ROOT / 'baselines'}. " in result.stdout


def test_the_rootdir_note_names_the_baselines_folder_given(tmp_path):
    """With --flux-baselines-dir the note named the checkout, not the folder the run reads."""
    report, store = tmp_path / "report", tmp_path / "store"
    report.mkdir()
    copy_budgets(store)
    result = run_pytest("-m", "h100", "--flux-report-dir", str(report), f"--flux-baselines-dir={store}",
                        "--flux-device", "cpu", "--flux-model", "tiny", "--flux-stacks", "bf16",
                        "--flux-scenarios", "64x64@2", "--co")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"from an option's value (its ini file was not read); baselines are looked up from {store}. " \
        in result.stdout, result.stdout[-2000:]
