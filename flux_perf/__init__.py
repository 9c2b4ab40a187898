"""flux-perf: a pytest-driven performance regression suite for FLUX.1-Kontext inference."""

__version__ = "0.1.0"

# Here, not in suite/config.py or instrument/: the pytest plugin needs them without importing torch.
DEFAULT_REPORT_DIR = "flux-perf-report"
TELEMETRY_INTERVAL_S = 0.05  # seconds between NVML samples during the timed rounds
