# rank_sum_cdf (Mann-Whitney null, used by the gate's relative budget) vs an independent DP, sizes the gate uses.
import sys, math
import numpy as np
from functools import lru_cache
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.gate.stats import rank_sum_cdf, two_sample_ratio
import scipy.stats as st

def my_counts(n, m):
    # number of arrangements with U = u: f(n, m) via the recurrence f(n,m,u) = f(n-1,m,u-m) + f(n,m-1,u)
    f = [[None]*(m+1) for _ in range(n+1)]
    for i in range(n+1):
        for j in range(m+1):
            if i == 0 or j == 0: f[i][j] = [1]; continue
            a, b = f[i-1][j], f[i][j-1]
            out = [0]*(i*j+1)
            for u, c in enumerate(b): out[u] += c
            for u, c in enumerate(a): out[u+j] += c
            f[i][j] = out
    return f[n][m]
worst = 0
for n, m in [(1,8),(2,8),(3,8),(8,8),(8,16),(8,32),(16,32),(32,32),(32,8),(5,32)]:
    c = np.cumsum(my_counts(n, m)) / math.comb(n+m, n)
    worst = max(worst, np.max(np.abs(c - rank_sum_cdf(n, m))))
print("max |cdf diff| over gate sizes:", worst)
# inversion against scipy's exact Mann-Whitney at the gate's per-look level, 8..32 x 8..32
rng = np.random.default_rng(5); mism = 0; tot = 0
for n in (8, 16, 32):
    for m in (3, 8, 32):
        for _ in range(5):
            ref = np.exp(rng.normal(0, .02, m)); s = np.exp(rng.normal(.03, .02, n))
            for conf in (0.95, 1-0.05/3):
                iv = two_sample_ratio(ref, s, conf); a = (1-conf)/2
                for end, step in ((iv.low, -1), (iv.high, 1)):
                    for eps, want in ((step*1e-9, False), (-step*1e-9, True)):
                        th = math.log(end) + eps
                        pg = st.mannwhitneyu(np.log(s)-th, np.log(ref), alternative="greater", method="exact").pvalue
                        pl = st.mannwhitneyu(np.log(s)-th, np.log(ref), alternative="less", method="exact").pvalue
                        tot += 1; mism += ((pg > a and pl > a) != want) if iv.reached else 0
print(f"two-sample inversion checks: {tot}, mismatches {mism}")
