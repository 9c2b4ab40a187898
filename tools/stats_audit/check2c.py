# Edge null (head/base = 1.01 on average) with a between-block spread tau of head/base, m=70 pairs a block (512 sizing).
import math, sys
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.ab.rule import pool
rng = np.random.default_rng(21); R = 1500; m = 70; sig = 0.0175
for tau in (0.0, 0.002, 0.005):
    out = []
    for K in (1, 2, 4, 8):
        c = 0
        for _ in range(R):
            d = np.concatenate([math.log(1.01) + rng.normal(0, tau) + rng.normal(0, sig, m) for _ in range(K)])
            b = np.exp(rng.normal(0, .01, m*K)); c += pool(list(b), list(b*np.exp(d)), 0.01).change == "slower"
        out.append(f"K={K}: {c/R:.3f}")
    print(f"tau={100*tau:.1f}% (sd {sig:.4f}, {m} pairs/block, {R} reps, se~0.004): " + "  ".join(out))
