# Check 2: pooled blocks (rule.pool + holm_over + verdict_of, one case) under the edge null and a shift.
import math, sys
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.ab.rule import pool, holm_over, verdict_of

TOL = 0.01
KS = (1, 2, 4, 8, 16)

def run(label, center, sigma, m, reps, tau=0.0, seed=0, dist="normal"):
    rng = np.random.default_rng(seed)
    slower = {k: 0 for k in KS}; any_prov = 0; flips = 0; ups = 0
    for _ in range(reps):
        blocks = []
        for b in range(max(KS)):
            drift = rng.normal(0, 0.05)               # common drift of the machine: hits both sides
            eff = rng.normal(0, tau)                    # block-to-block movement of head/base itself
            base = np.exp(drift + rng.normal(0, sigma/math.sqrt(2), m))
            noise = rng.normal(0, sigma/math.sqrt(2), m) if dist == "normal" else sigma/math.sqrt(2)*rng.standard_t(3, m)
            head = np.exp(drift + math.log(center) + eff + noise)
            blocks.append((base, head))
        seen = []
        for k in range(1, max(KS)+1):
            b = np.concatenate([x for x, _ in blocks[:k]]); h = np.concatenate([y for _, y in blocks[:k]])
            p = pool(list(b), list(h), TOL)
            v = verdict_of(p, None, holm_over([p.p_slower])[0], 1)[0]
            seen.append(v == "slower")
            if k in slower: slower[k] += v == "slower"
        any_prov += any(seen)
        flips += any(seen[i] and not seen[i+1] for i in range(len(seen)-1))
    print(f"{label} (m={m} pairs/block, sigma={sigma}, tau={tau}, {dist}, {reps} reps): " +
          "  ".join(f"K={k}: {slower[k]/reps:.4f}" for k in KS) +
          f" | any of K=1..16 provisional slower: {any_prov/reps:.4f}; runs where adding a block undid a slower: {flips/reps:.3f}")

run("edge null, ratio=1.01", 1.01, 0.02, 10, 4000, seed=1)
run("edge null, ratio=1.01", 1.01, 0.03, 10, 4000, seed=2, dist="t3")
run("A vs A, ratio=1.00", 1.00, 0.03, 10, 2000, seed=3)
run("edge null + block effect", 1.01, 0.02, 10, 4000, tau=0.005, seed=4)
run("power, ratio=1.02", 1.02, 0.03, 10, 2000, seed=5)
run("power, ratio=1.02", 1.02, 0.03, 10, 2000, seed=6, dist="t3")
