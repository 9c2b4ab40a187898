"""Shared fixtures of the CPU suite: the tiny model, built once."""

import pytest

from flux_perf.model.models import resolve_model_source
from flux_perf.model.pipeline import load_model


@pytest.fixture(scope="session")
def tiny_source():
    return resolve_model_source("tiny", "cpu")


@pytest.fixture
def tiny_model(tiny_source):
    """A fresh tiny pipeline (components mutate it, so each test gets its own)."""
    return load_model(tiny_source, "cpu")

