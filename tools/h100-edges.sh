#!/usr/bin/env bash
# The gate's edges on an H100, after a default `pytest -m h100` on the same machine (warm caches):
#   1. A/B of fp8 at 512x512@4 against the code of BASE (a checkout), to tell a code change from
#      machine-to-machine variance of a host-bound case;
#   2. 1 % output noise planted into compile, fp8 and fast at the scenarios calibrated this session;
#   3. a case 5 % faster than its reference, and a deleted latency.json, on bf16 at 512x512@4.
# Usage: tools/h100-edges.sh BASE OUT
set -uo pipefail
base=$1 out=$2
timeout 170 python3 -m flux_perf ab --base "$base" --head . --stacks fp8 --scenarios 512x512@4 \
  --block-seconds 40 --json "$out/ab-fp8-512s4.json" 2>&1 | grep -v "Attention backends" | tail -8
timeout 170 python3 -m pytest -m h100 -p no:cacheprovider -q tests/h100/test_fidelity.py \
  --flux-stacks compile,fp8,fast --flux-scenarios 768x768@6,512x512@4 --flux-plant noise:0.01 \
  --flux-rounds 1 --flux-max-rounds 1 --flux-report-dir /tmp/noise 2>&1 | grep -E "passed|failed" | tail -3
cp /tmp/noise/results.json "$out/plant-noise-768-512s4.json"
for mode in faster missing; do
  rm -rf /tmp/b-$mode && cp -r baselines /tmp/b-$mode
  python3 - "$mode" <<'PY'
import json, pathlib, sys
path = next(pathlib.Path(f"/tmp/b-{sys.argv[1]}").glob("nvidia-h100*/synthetic-*/latency.json"))
if sys.argv[1] == "missing":
    path.unlink()
else:  # the reference 5 % slower: the run is 5 % faster than it
    data = json.loads(path.read_text())
    entry = data["entries"]["512x512@4"]["bf16"]
    entry["samples_s"] = [s * 1.05 for s in entry["samples_s"]]
    entry["median_s"] *= 1.05
    path.write_text(json.dumps(data))
PY
  timeout 90 python3 -m pytest -m h100 -p no:cacheprovider -q -W always tests/h100/test_latency.py --flux-stacks bf16 \
    --flux-scenarios 512x512@4 --flux-baselines-dir /tmp/b-$mode --flux-report-dir /tmp/r-$mode 2>&1 \
    | grep -E "faster than|record it with|passed|failed" | tail -4
  cp /tmp/r-$mode/results.json "$out/edge-$mode.json"
done
