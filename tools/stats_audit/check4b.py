# One-sidedness: truly faster cases (ratio 0.97/0.95/0.90) through the adaptive looks, relative budget (3 %), 8 reference rounds.
import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.gate.latency import judge_latency, decided, Verdict
from flux_perf.gate.budgets import LatencyBudget
rng = np.random.default_rng(9); R = 2000
for sigma in (0.005, 0.02, 0.05):
    for r in (0.97, 0.95, 0.90):
        cnt = {v: 0 for v in Verdict}
        for _ in range(R):
            ref = np.exp(rng.normal(0, sigma, 8)); med = float(np.median(ref))
            b = LatencyBudget(med*1.03, "relative", "s", 0.03, tuple(ref), None, (), med)
            s = r*np.exp(rng.normal(0, sigma, 32))
            for n in (8, 16, 32):
                if decided(list(s[:n]), [b], 3): break
            cnt[judge_latency(list(s[:n]), [b], looks=3).verdict] += 1
        print(f"sigma={sigma} true ratio {r}: " + ", ".join(f"{v.value} {c/R:.3f}" for v, c in cnt.items() if c))
