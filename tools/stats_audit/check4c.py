# Gate at the edge (true latency = reference x 1.03) when consecutive rounds are correlated (AR(1) in log time).
import sys, math, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.gate.latency import judge_latency, decided, Verdict
from flux_perf.gate.budgets import LatencyBudget
def ar1(rng, n, rho, s):
    e = np.empty(n); e[0] = rng.normal(0, s)
    for i in range(1, n): e[i] = rho*e[i-1] + rng.normal(0, s*math.sqrt(1-rho*rho))
    return e
rng = np.random.default_rng(17); R = 5000
for rho in (0.15, 0.45):
    f = 0
    for _ in range(R):
        ref = np.exp(ar1(rng, 8, rho, .01)); med = float(np.median(ref))
        b = LatencyBudget(med*1.03, "relative", "s", 0.03, tuple(ref), None, (), med)
        s = 1.03*np.exp(ar1(rng, 32, rho, .01))
        for n in (8, 16, 32):
            if decided(list(s[:n]), [b], 3): break
        f += judge_latency(list(s[:n]), [b], looks=3).verdict is Verdict.FAIL
    print(f"AR(1) rho={rho}: false FAIL at the edge {f/R:.4f} (stated bound 0.025)")
