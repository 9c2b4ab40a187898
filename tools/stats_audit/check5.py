# Check 5: can a verdict read PASS when the data could not decide?
import math, sys
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.gate.latency import judge_latency, decided
from flux_perf.gate.budgets import LatencyBudget
from flux_perf.ab.rule import pool, verdict_of, holm_over
from flux_perf.gate.stats import paired_ratio, two_sample_ratio

nan, inf = float("nan"), float("inf")
absolute = LatencyBudget(1.0, "absolute", "budgets.toml")
ref8 = tuple(0.5 * (1 + 0.001 * i) for i in range(8))
relative = LatencyBudget(0.5 * 1.03, "relative", "rec", 0.03, ref8, None, (), 0.5)
bare = LatencyBudget(0.5 * 1.03, "relative", "rec", 0.03, (), None, (), 0.5)   # reference without rounds

def show(label, samples, budgets, looks=3):
    try:
        r = judge_latency(samples, budgets, looks=looks)
        c = r.checks[0]
        print(f"{label:55s} -> {r.verdict.value:12s} failed={r.failed} interval=({c.low_s}, {c.high_s}) median={r.median_s} "
              f"decided={decided(samples, budgets, looks)}")
    except Exception as e:
        print(f"{label:55s} -> raises {type(e).__name__}: {e}")

show("absolute: 8 rounds, one NaN first", [nan] + [0.9] * 7, [absolute])
show("absolute: 8 rounds, NaN in the middle", [0.9, 0.9, 0.9, nan, 0.9, 0.9, 0.9, 0.9], [absolute])
show("absolute: 8 rounds, all NaN", [nan] * 8, [absolute])
show("absolute: NaN first, rest far OVER budget", [nan] + [5.0] * 7, [absolute])
show("absolute: 8 rounds, one +inf", [0.9] * 7 + [inf], [absolute])
show("absolute: 8 rounds, one -inf/0 (bad timer)", [-inf] + [0.9] * 7, [absolute])
show("absolute: 8 rounds, one 0.0", [0.0] + [0.9] * 7, [absolute])
show("reference without rounds: NaN first", [nan] + [0.5] * 7, [bare])
show("relative with rounds: NaN", [nan] + [0.5] * 7, [relative])
show("relative: zero variance both sides, at ratio 1.0", [0.5] * 8, [LatencyBudget(0.515, "relative", "rec", 0.03, (0.5,) * 8, None, (), 0.5)])
show("absolute: 6 rounds (too few at 98.3 %)", [0.9] * 6, [absolute])
show("absolute: 1 round", [0.9], [absolute], looks=1)
# A/B
for label, b, h in (("A/B all ties (identical rounds)", [1.0] * 10, [1.0] * 10),
                    ("A/B 5 pairs (too few)", [1.0] * 5, [1.3] * 5),
                    ("A/B NaN in head", [1.0] * 10, [1.0] * 9 + [nan])):
    try:
        p = pool(b, h, 0.01)
        print(f"{label:55s} -> {verdict_of(p, None, holm_over([p.p_slower])[0], 1)} ({p.low}, {p.high}) p={p.p_slower}")
    except Exception as e:
        print(f"{label:55s} -> raises {type(e).__name__}: {e}")
