"""The interleaved A/B gate of a pull request: one worker process per checkout on one GPU
(worker.py), rounds interleaved ABBA (orchestrator.py), one verdict per case from all its pairs
with Holm's correction over the run's cases (rule.py), and how often runs of n pairs call each
verdict from measured rounds (pairs.py)."""
