"""flux-perf: a pytest-driven performance regression suite for FLUX.1-Kontext inference."""

__version__ = "0.1.0"
