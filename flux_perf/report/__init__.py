"""What a run leaves behind: the typed results.json, the summary and plots, the comparison of
two runs, and the per-step account of a profile."""
