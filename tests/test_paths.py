"""Where a relative folder option lands, and how messages name it. Typed on the command line (or in
PYTEST_ADDOPTS) it starts at the folder the command was run from, as pytest's own --basetemp and
--junitxml; written in the ini file's addopts it starts at the ini file's folder, as the ini's own
paths; left out, the baselines are the project's `<rootdir>/baselines`. Every message names the
absolute folder. These runs only collect (`--collect-only`): the header names both folders after the
usage checks that read the budgets, so nothing is measured."""

import os

import pytest
from helpers import ROOT, copy_budgets, run_flux_perf, run_pytest

TINY = ("--flux-device=cpu", "--flux-model=tiny", "--flux-stacks=bf16", "--flux-scenarios=64x64@1")


def folders_line(result) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("flux-perf: stacks")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return lines[0]


def test_folders_typed_on_the_command_line_start_where_pytest_ran(tmp_path):
    """`cd tests && pytest -m h100 h100 --flux-baselines-dir=REL`: REL from tests/, as the report folder
    always was (was: the baselines from the checkout's root, the report from tests/)."""
    here = ROOT / "tests"
    copy_budgets(tmp_path / "store")
    store, report = (os.path.relpath(tmp_path / name, here) for name in ("store", "report"))
    result = run_pytest("-m", "h100", "h100", "--collect-only", *TINY, f"--flux-baselines-dir={store}",
                        f"--flux-report-dir={report}", cwd=here)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"; baselines {tmp_path / 'store'}; report -> {tmp_path / 'report'}" in folders_line(result)


PROJECT_CONFTEST = 'pytest_plugins = ["flux_perf.plugin"]\n'


@pytest.fixture
def project(tmp_path):
    """A project whose ini file names its baselines in addopts, run from its subfolder `sub`; each
    of the three folders named `store` holds budgets, so only the folder the header names differs."""
    root = tmp_path / "project"
    for folder in (root / "store", root / "sub" / "store", root / "cfg" / "store"):
        copy_budgets(folder)
    ini = f"[pytest]\naddopts = --flux-baselines-dir=store {' '.join(TINY)}\n"
    (root / "pytest.ini").write_text(ini)
    (root / "cfg" / "pytest.ini").write_text(ini)
    (root / "conftest.py").write_text(PROJECT_CONFTEST)
    return root


@pytest.mark.parametrize("options, env, expected", [
    ((), {}, "store"),  # from the ini file: its folder, whichever folder pytest runs from
    (("--flux-baselines-dir=store",), {}, "sub/store"),  # typed: where pytest ran
    ((), {"PYTEST_ADDOPTS": "--flux-baselines-dir=store"}, "sub/store"),  # typed, in the environment
    (("-p", "flux_perf.plugin", "-c", "../cfg/pytest.ini", "--rootdir=.."), {}, "cfg/store"),  # the ini's folder,
    # not the rootdir (was: the rootdir's store)
])
def test_a_folder_from_the_ini_file_starts_at_its_folder(project, options, env, expected):
    result = run_pytest("-m", "h100", "--collect-only", *options, cwd=project / "sub", env_extra=env)
    assert result.returncode in (0, 5), result.stdout[-2000:] + result.stderr[-2000:]
    assert f"; baselines {project / expected}; report -> {project / 'sub' / 'flux-perf-report'}" \
        in folders_line(result)


def test_flux_perf_names_the_absolute_folder_it_was_given_relative(tmp_path):
    """`flux-perf baselines show --baselines-dir REL` from another folder: REL from there, named
    absolute (was: named as typed, beside a printed command that named it absolute)."""
    (tmp_path / "empty").mkdir()
    shown = run_flux_perf("baselines", "show", "--baselines-dir", "empty", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"no references in {tmp_path / 'empty'} (record them with: " in shown.stdout
    missing = run_flux_perf("run", "--device", "cpu", "--baselines-dir", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and f"--baselines-dir {tmp_path / 'nowhere'} " in missing.stderr, missing.stderr


def test_paths_given_to_commands_are_named_absolute(tmp_path, cli, monkeypatch):
    """`calibrate --json`, `ab --json`, `run --save-image`, `baselines migrate FOLDER`, `calibrate
    --restate FOLDER` typed relative: from the current folder, named absolute, as --baselines-dir is
    (was: named as typed, so a message did not say which folder it meant)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    for args in (("calibrate", "--device", "cpu", "--scenarios", "64x64@1", "--json", "afile/c.json"),
                 ("ab", "--base", ".", "--head", ".", "--device", "cpu", "--stacks", "bf16", "--scenarios",
                  "64x64@1", "--json", "afile/ab.json")):
        refused = cli(*args)
        assert refused.returncode == 2 and f"--json folder {tmp_path / 'afile'} " in refused.stderr, refused.stderr
    migrate = cli("baselines", "migrate", "nowhere")
    assert migrate.returncode == 2 and f"{tmp_path / 'nowhere'}: not a baseline folder" in migrate.stderr
    restate = cli("calibrate", "--restate", "nowhere")
    assert restate.returncode == 2 and f"--restate {tmp_path / 'nowhere'}: no calibration.json" in restate.stderr
    run = cli("run", "--device", "cpu", "--resolution", "64", "--steps", "1", "--rounds", "1",
              "--report-dir", "report", "--save-image", "img/{scenario}.png")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"image: {tmp_path / 'img' / '64x64@1.png'}\n" in run.stdout
