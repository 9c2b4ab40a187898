"""Shared fixtures of the CPU suite: the tiny model, built once."""

import os
import subprocess

import pytest

from flux_perf.cli import main
from flux_perf.model.models import resolve_model_source
from flux_perf.model.pipeline import load_model


@pytest.fixture(scope="session")
def tiny_source():
    return resolve_model_source("tiny", "cpu")


@pytest.fixture
def tiny_model(tiny_source):
    """A fresh tiny pipeline (components mutate it, so each test gets its own)."""
    return load_model(tiny_source, "cpu")


@pytest.fixture
def cli(capsys, monkeypatch):
    """`flux-perf ARGS` in this process (a subprocess costs seconds of imports): (code, out, err).
    Not under CI, as users run it (CI refuses baseline writes; the tests that check that set it)."""
    monkeypatch.setenv("CI", "")
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "CUDA_MODULE_LOADING"):
        # main() sets them: restore each afterwards as it was, absent included (an empty value
        # would read as user-set and change the path main() takes).
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.setenv(name, "unset")  # registers the variable's absence for teardown
            monkeypatch.delenv(name)

    def run(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run
