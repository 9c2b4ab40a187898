# Check 3: Holm (gate/stats.holm, ab/rule.holm_over) against an independent step-down with adjusted p-values.
import sys, itertools
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.gate.stats import holm
from flux_perf.ab.rule import holm_over, FAMILY_ALPHA

def ref_holm(p, a):
    p = np.asarray(p, float); K = len(p)
    if K == 0: return []
    o = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate(np.minimum(1, (K - np.arange(K)) * p[o]))   # monotone adjusted p
    out = np.zeros(K, bool); out[o] = adj <= a + 1e-15
    return out.tolist()

rng = np.random.default_rng(0); bad = 0; n = 0
for _ in range(200000):
    K = int(rng.integers(1, 9))
    p = rng.choice([0.001, 0.003, 0.00625, 0.008, 0.0125, 0.025, 0.05, 1.0], K) if rng.random() < 0.5 else rng.random(K) * 0.05
    a = rng.choice([0.025, 0.05])
    n += 1; bad += holm(list(p), a) != ref_holm(p, a)
print(f"holm vs reference step-down: {bad} disagreements in {n} random families (with ties)")
# monotone in p: lowering one p never removes a rejection
viol = 0
for _ in range(50000):
    K = int(rng.integers(2, 7)); p = rng.random(K) * 0.03; r0 = holm(list(p), 0.025)
    i = rng.integers(K); q = p.copy(); q[i] *= rng.random(); r1 = holm(list(q), 0.025)
    viol += any(a and not b for a, b in zip(r0, r1))
print("monotonicity violations:", viol)
# padding: family larger than the p-values given
print(holm_over([0.005], 4), holm_over([0.006], 4), holm_over([0.0062], 4), holm_over([0.0063], 4), holm_over([0.02, 0.004], 4))
# FWER with K=4 independent cases all exactly at the edge: p-values from the exact paired test, n=20
from flux_perf.gate.stats import paired_p_slower
R = 20000; fam = 0
for _ in range(R):
    ps = []
    for k in range(4):
        b = np.exp(rng.normal(0, 0.01, 20)); h = b * 1.01 * np.exp(rng.normal(0, 0.02, 20))
        ps.append(paired_p_slower(b, h, 1.01))
    fam += any(holm_over(ps))
print(f"FWER, 4 cases at the edge (ratio 1.01), 20 pairs each: {fam/R:.4f} (alpha {FAMILY_ALPHA})")
