"""flux-perf: a pytest-driven performance regression suite for FLUX.1-Kontext inference."""

__version__ = "0.1.0"

# Here, not in suite/config.py: the pytest plugin needs it without importing torch.
DEFAULT_REPORT_DIR = "flux-perf-report"
