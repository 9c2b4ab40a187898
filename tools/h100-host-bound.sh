#!/usr/bin/env bash
# Why host-bound cases at 512 slow down between their warm-up and their timed rounds on some H100s
# of the pool (docs/measurement.md, eleventh session): the suite's own 20 Hz NVML sampler, or the
# host. Runs fp8 at 512x512@6 with the sampler at its default 0.05 s and at 1 s, alternating, on
# one machine; each run's record keeps its warm-up, its rounds, the CPU pressure and steal shares.
# Usage: tools/h100-host-bound.sh OUT [REPEATS]
set -uo pipefail
out=$1 repeats=${2:-3}
mkdir -p "$out"
for i in $(seq 1 "$repeats"); do
  for interval in 0.05 1.0; do
    name="fp8-512s6-interval${interval}-run${i}"
    timeout 150 python3 -m pytest -m h100 -p no:cacheprovider -q tests/h100/test_latency.py \
      --flux-stacks fp8 --flux-scenarios 512x512@6 --flux-max-rounds 8 \
      --flux-telemetry-interval "$interval" "--flux-report-dir=/tmp/$name" 2>&1 | tail -1
    cp "/tmp/$name/results.json" "$out/$name.json"
  done
done
python3 - "$out" <<'PY'
import json, pathlib, statistics, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("fp8-512s6-*.json")):
    record = json.loads(path.read_text())["records"][0]
    warm, wall = record.get("warmup_wall_s") or [], record.get("wall_s") or {}
    if not wall:  # the case errored: its error says why
        print(f"{path.stem}: no rounds ({record.get('error')})")
        continue
    print(f"{path.stem}: warm-up {[round(w, 3) for w in warm]}, timed median {wall['median']:.3f} s, "
          f"CPU stall {record.get('host_cpu_stall')}, steal {record.get('host_cpu_steal')}")
PY
