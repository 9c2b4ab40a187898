"""Measuring: the machine, the case runner (build, warm, time rounds), NVML telemetry, host
pressure, FLOPs and the matmul ceilings. It measures; it never judges."""
