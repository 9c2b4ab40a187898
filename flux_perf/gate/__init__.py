"""Judging: statistics, the latency and fidelity verdicts, the budgets file, the image metrics
and the fidelity calibration. Judges read no file: they take numbers and references."""
