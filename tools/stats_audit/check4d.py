# Detection limit as a boundary: rounds scaled so that the run's own location lands on the stated limit,
# times (1 +- 1e-6), must flip to FAIL exactly there. Relative: location = HL ratio (x reference); absolute: median.
import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.gate.latency import judge_latency, Verdict
from flux_perf.gate.budgets import LatencyBudget
rng = np.random.default_rng(4); N = 1500
for kind in ("relative", "absolute", "both"):
    bad = 0; gap = []
    for i in range(N):
        sig = rng.choice([0.003, 0.02, 0.06]); n = int(rng.choice([8, 16, 32])); ref = np.exp(rng.normal(0, sig, int(rng.choice([8, 16]))))
        med = float(np.median(ref)); budgets = []
        if kind != "absolute": budgets.append(LatencyBudget(med*1.03, "relative", "s", 0.03, tuple(ref), None, (), med))
        if kind != "relative": budgets.append(LatencyBudget(float(rng.uniform(1.0, 1.1)), "absolute", "b"))
        s = np.exp(rng.normal(rng.normal(0, .02), sig, n))
        r = judge_latency(list(s), budgets, looks=3)
        rel = next((c for c in r.checks if c.budget.kind == "relative"), None)
        loc = rel.ratio.ratio * r.reference_s if (kind == "relative") else r.median_s
        c = r.fails_from_s / loc
        up = judge_latency(list(s*c*(1+1e-6)), budgets, looks=3).verdict; dn = judge_latency(list(s*c*(1-1e-6)), budgets, looks=3).verdict
        ok = up is Verdict.FAIL and dn is not Verdict.FAIL
        bad += not ok
        if kind == "both":   # the true boundary, by bisection on the scale
            lo, hi = 0.5, 3.0
            for _ in range(50):
                mid = (lo+hi)/2
                if judge_latency(list(s*mid), budgets, looks=3).verdict is Verdict.FAIL: hi = mid
                else: lo = mid
            gap.append(hi*r.median_s / r.fails_from_s - 1)
    extra = f"; true FAIL boundary vs stated fails_from_s: median {np.median(gap):+.4f}, range {min(gap):+.4f}..{max(gap):+.4f}" if gap else ""
    print(f"{kind:8s}: {N} runs, boundary violations {bad}{extra}")
