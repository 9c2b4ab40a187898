# Between-block spread of head/base (tau) in the committed A/B rounds: one-way random-effects ANOVA on the
# per-pair log ratios (method of moments), with 5 % winsorizing per series against slow-round outliers.
import json, glob
import numpy as np
from scipy.stats.mstats import winsorize
rows = []
for f in sorted(glob.glob(str(__import__("pathlib").Path(__file__).resolve().parents[2]) + "/docs/results/ab-*.json")):
    d = json.load(open(f))
    for c in d.get("cases", []):
        bl = c.get("blocks") or []
        if len(bl) < 3: continue
        for what in ("head", "control"):
            g = []
            for b in bl:
                o = b["head_s"] if what == "head" else (b.get("control") or {}).get("control_s")
                if not o: break
                g.append(np.log(o) - np.log(b["base_s"]))
            if len(g) < 3: continue
            allv = np.asarray(winsorize(np.concatenate(g), limits=(0.05, 0.05)))
            sizes = [len(x) for x in g]; idx = np.cumsum([0] + sizes)
            g = [allv[idx[i]:idx[i+1]] for i in range(len(sizes))]
            k, m = len(g), np.mean(sizes)
            msw = np.mean([np.var(x, ddof=1) for x in g]); msb = m * np.var([x.mean() for x in g], ddof=1)
            tau = np.sqrt(max(0, (msb - msw) / m)); sig = np.sqrt(msw)
            rows.append((f.split("/")[-1], what, k, int(m), sig, tau, 1 + m * tau**2 / sig**2))
for r in rows:
    print(f"{r[0]:38s} {r[1]:7s} blocks={r[2]:2d} m={r[3]:3d} within-sd={100*r[4]:.2f}% tau={100*r[5]:.3f}% variance inflation 1+m*tau^2/sd^2={r[6]:.2f}")
