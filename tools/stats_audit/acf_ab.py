# Lag-1 autocorrelation of one side's consecutive rounds within an A/B block (base_s, in the order taken).
import json, glob, numpy as np
rs = []
for f in sorted(glob.glob(str(__import__("pathlib").Path(__file__).resolve().parents[2]) + "/docs/results/ab-*.json")):
    d = json.load(open(f))
    for c in d.get("cases", []):
        for b in c.get("blocks") or []:
            for side in ("base_s", "head_s"):
                v = b.get(side) or []
                if len(v) < 20: continue
                x = np.log(v); x = x - x.mean()
                rs.append((np.sum(x[1:]*x[:-1]) / np.sum(x*x), len(v), f.split("/")[-1]))
r = np.array([a for a, _, _ in rs]); n = np.array([b for _, b, _ in rs])
print(f"{len(r)} block series of >= 20 rounds (n {n.min()}..{n.max()}): lag-1 mean {r.mean():.3f} (independence ~{np.mean(-1/n):.3f}), "
      f"median {np.median(r):.3f}, z vs independence {(r.mean()-np.mean(-1/n))/np.sqrt(np.mean(1/n)/len(r)):.1f}")
for fname in sorted(set(x[2] for x in rs)):
    sel = [a for a, _, g in rs if g == fname]; print(f"  {fname:40s} {len(sel):3d} series, mean lag-1 {np.mean(sel):+.3f}")
print("paired log ratios d = log(head/base), consecutive pairs within a block:")
rs = []
for f in sorted(glob.glob(str(__import__("pathlib").Path(__file__).resolve().parents[2]) + "/docs/results/ab-*.json")):
    d = json.load(open(f))
    for c in d.get("cases", []):
        for b in c.get("blocks") or []:
            for other in ("head_s", "control"):
                o = b.get("head_s") if other == "head_s" else (b.get("control") or {}).get("control_s")
                if not o or len(o) < 20: continue
                x = np.log(o) - np.log(b["base_s"]); x = x - x.mean()
                rs.append((np.sum(x[1:]*x[:-1]) / np.sum(x*x), len(x)))
r = np.array([a for a, _ in rs]); n = np.array([b for _, b in rs])
print(f"{len(r)} series: lag-1 mean {r.mean():.3f} (independence ~{np.mean(-1/n):.3f}), z {(r.mean()-np.mean(-1/n))/np.sqrt(np.mean(1/n)/len(r)):.1f}")
