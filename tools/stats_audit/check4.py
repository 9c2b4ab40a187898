# Check 4: the latency gate's adaptive looks (8 -> 16 -> 32 rounds, 3 looks, Bonferroni) at the edge of its budget,
# and the stated detection limit. Uses the project's own decided()/judge_latency() and MeasureSettings.look_sizes.
import math, sys, statistics
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.gate.latency import judge_latency, decided, Verdict
from flux_perf.gate.budgets import LatencyBudget
from flux_perf.instrument.measure import MeasureSettings

S = MeasureSettings(); SIZES, LOOKS = S.look_sizes, S.looks
TOL = 0.03

def noise(rng, n, model, sigma):
    if model == "lognormal": return np.exp(rng.normal(0, sigma, n))
    if model == "skewed":    # right-skewed: 10 % of rounds hit by an exponential extra delay (host-bound 512 cases)
        return np.exp(rng.normal(0, sigma, n)) * (1 + (rng.random(n) < 0.1) * rng.exponential(3 * sigma, n))
    raise ValueError(model)

def one_run(rng, slow, model, sigma, ref_rounds, kind):
    ref_true = 1.0
    ref = ref_true * noise(rng, ref_rounds, model, sigma)
    if kind == "relative":
        budget = LatencyBudget(float(np.median(ref)) * (1 + TOL), "relative", "sim", TOL, tuple(ref), None, (), float(np.median(ref)))
        center = ref_true * (1 + slow)              # true latency relative to the reference's true latency
    else:
        budget = LatencyBudget(1.0 * (1 + TOL), "absolute", "sim")
        center = (1 + slow) / float(np.median(noise(np.random.default_rng(0), 200001, model, sigma)))  # true median at (1+slow) x 1.0
    allr = center * noise(rng, SIZES[-1], model, sigma)
    for look, n in enumerate(SIZES, 1):
        if decided(list(allr[:n]), [budget], LOOKS): break
    res = judge_latency(list(allr[:n]), [budget], looks=LOOKS)
    return res.verdict, look, res.detection_limit

def rate(slow, model, sigma, ref_rounds, kind, R, seed):
    rng = np.random.default_rng(seed); fails = 0; by_look = [0]*LOOKS; lim = []; inc = 0
    for _ in range(R):
        v, look, d = one_run(rng, slow, model, sigma, ref_rounds, kind)
        if v is Verdict.FAIL: fails += 1; by_look[look-1] += 1
        inc += v is Verdict.INCONCLUSIVE
        lim.append(d)
    return fails / R, by_look, inc / R, lim

print(f"look sizes {SIZES}, looks {LOOKS}, per-look confidence {1-0.05/LOOKS:.4f}")
R = 6000
for kind in ("relative", "absolute"):
    for model, sigma in (("lognormal", 0.005), ("lognormal", 0.02), ("skewed", 0.02)):
        for ref_rounds in ((8, 32) if kind == "relative" else (0,)):
            f, by, inc, _ = rate(TOL, model, sigma, ref_rounds, kind, R, 1)
            se = math.sqrt(0.025*0.975/R)
            print(f"EDGE {kind:8s} {model:9s} sigma={sigma:.3f} ref={ref_rounds:2d}: false FAIL {f:.4f} (bound 0.025, se {se:.4f}) by look {by}, inconclusive {inc:.3f}")
# detection limit: median stated limit of unchanged runs, then the catch rate at that slow-down
for kind in ("relative", "absolute"):
    for model, sigma in (("lognormal", 0.005), ("lognormal", 0.02), ("skewed", 0.02)):
        _, _, _, lim = rate(0.0, model, sigma, 8, kind, 2000, 2)
        d = float(np.median(lim))
        f, by, inc, _ = rate(d, model, sigma, 8, kind, 3000, 3)
        print(f"DETECT {kind:8s} {model:9s} sigma={sigma:.3f}: median stated limit {d:+.4f}; true slow-down at it caught {f:.3f} (by look {by}), inconclusive {inc:.3f}")
