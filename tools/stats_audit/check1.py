# Check 1: paired_ratio (Wilcoxon/HL interval) == exact test inversion, n=3..25; coverage.
import math, sys, itertools
import numpy as np, scipy.stats as st
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from flux_perf.gate.stats import paired_ratio, signed_rank_cdf, paired_p_slower

def my_cdf(n):
    # independent: exact null distribution of T+ by integer DP (counts), as fractions
    counts = np.zeros(n*(n+1)//2+1, dtype=object); counts[0] = 1
    for r in range(1, n+1):
        new = counts.copy(); new[r:] = new[r:] + counts[:-r]; counts = new
    return np.cumsum(counts) / 2**n

mism = 0; checked = 0
for n in range(3, 26):
    c = my_cdf(n).astype(float)
    assert np.allclose(c, signed_rank_cdf(n), atol=1e-15), n
    rng = np.random.default_rng(n)
    for rep in range(20):
        base = np.exp(rng.normal(0, 0.02, n)); head = base*np.exp(rng.normal(0.01, 0.02, n))
        d = np.log(head) - np.log(base)
        i, j = np.triu_indices(n); w = np.unique((d[i]+d[j])/2)
        thetas = np.concatenate([[w[0]-1], (w[:-1]+w[1:])/2, [w[-1]+1]])
        for conf in (0.95, 0.99, 1-0.05/3):
            a = (1-conf)/2
            iv = paired_ratio(base, head, conf)
            for th in thetas:
                pg = st.wilcoxon(d-th, alternative="greater", method="exact").pvalue
                pl = st.wilcoxon(d-th, alternative="less", method="exact").pvalue
                accept = pg > a and pl > a
                if iv.reached:
                    inside = math.log(iv.low) < th < math.log(iv.high)
                else:
                    inside = True  # no interval at that level: every theta must be accepted
                checked += 1
                if accept != inside:
                    mism += 1
                    if mism < 5: print("MISMATCH", n, conf, th, accept, inside, pg, pl, iv)
            # p-value consistency with scipy (one-sided against 1.01)
            p = paired_p_slower(base, head, 1.01)
            ps = st.wilcoxon(d-math.log(1.01), alternative="greater", method="exact").pvalue
            assert abs(p-ps) < 1e-12, (n, p, ps)
print(f"inversion: {checked} theta checks, {mism} mismatches")

# reached flag: the smallest n with an interval
for conf in (0.95, 0.99, 1-0.05/3):
    print(conf, "first n reached:", next(n for n in range(2, 30) if paired_ratio([1.0]*n, list(np.linspace(1.1,1.2,n)), conf).reached))

# coverage MC
R = 20000
for dist in ("normal", "t3", "ties"):
    rows = []
    for n in (3, 5, 6, 8, 10, 15, 20, 25):
        rng = np.random.default_rng(1000+n)
        cdf = signed_rank_cdf(n)
        k = np.nonzero(cdf <= 0.025+1e-12)[0]
        nominal = 1-2*cdf[k[-1]] if len(k) else float('nan')
        cov = 0; miss_lo = 0; unreached = 0
        theta = math.log(1.02)
        for _ in range(R):
            if dist == "normal": e = rng.normal(0, 0.02, n)
            elif dist == "t3": e = 0.01*rng.standard_t(3, n)
            else: e = 0.01*rng.integers(-2, 3, n)   # symmetric discrete: many zeros and ties
            base = np.exp(rng.normal(0, 0.02, n)); head = base*np.exp(theta+e)
            iv = paired_ratio(base, head, 0.95)
            if not iv.reached: unreached += 1; cov += 1; continue
            lo, hi = math.log(iv.low), math.log(iv.high)
            ok = lo <= theta + 1e-12 and theta - 1e-12 <= hi
            cov += ok; miss_lo += lo > theta + 1e-12
        rows.append(f"n={n}: cov={cov/R:.4f} (exact nominal {nominal:.4f}) P(low>theta)={miss_lo/R:.4f} unreached={unreached/R:.2f}")
    print(dist); print("\n".join(rows))
