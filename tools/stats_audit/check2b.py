import math, sys
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.ab.rule import pool
from flux_perf.gate.stats import signed_rank_cdf
rng = np.random.default_rng(11); R = 40000
for m in (10, 20):
    c = sum(pool(list(b), list(b*1.01*np.exp(rng.normal(0, 0.02, m))), 0.01).change == "slower"
            for b in (np.exp(rng.normal(0, 0.01, m)) for _ in range(R)))
    cdf = signed_rank_cdf(m); t = np.nonzero(cdf <= 0.025)[0][-1]
    print(f"m={m}: edge false-slower {c/R:.4f} +- {math.sqrt(c/R*(1-c/R)/R):.4f}; exact size P(T<=t)={cdf[t]:.4f}")
