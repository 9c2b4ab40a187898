"""The suite under torchrun: two CPU ranks (gloo) measure, agree on the verdict, and only
rank 0 writes the report and baselines. (Context parallelism itself needs two GPUs.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import copy_budgets

ROOT = Path(__file__).resolve().parent.parent


def test_two_ranks_agree_and_only_rank_zero_writes(tmp_path):
    copy_budgets(tmp_path / "baselines")
    env = {**os.environ, "CI": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "pytest",
         "-p", "no:cacheprovider", "-q", "-m", "h100", "tests/h100/test_latency.py", "tests/h100/test_fidelity.py",
         "--flux-device", "cpu", "--flux-model", "tiny", "--flux-stacks", "bf16", "--flux-scenarios", "64x64@2",
         # Scripted rounds: an update refuses rounds timed under CPU contention, and two ranks contend.
         "--flux-rounds", "3", "--flux-update-baselines", "--flux-scripted-clock", "0.1",
         f"--flux-baselines-dir={tmp_path / 'baselines'}", f"--flux-report-dir={tmp_path / 'report'}"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert result.stdout.count("2 passed") == 2, "both ranks run both tests (the update records, the latency test passes)"
    assert result.stdout.count("# flux-perf summary") == 1, "only rank 0 writes baselines and reports"
    record = json.loads((tmp_path / "report" / "results.json").read_text())["records"][0]
    assert record["world_size"] == 2 and record["fidelity"]["verdict"] == "updated"
    assert len(list((tmp_path / "baselines").glob("cpu-*/*/64x64@2.png"))) == 1


def _disturbance_of_two_ranks(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from flux_perf.instrument import distributed

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        lines = distributed.gathered(["another process on the GPU: pid 7"] if rank == 1 else [])
        Path(f"{out}.{rank}").write_text(json.dumps(lines))
    finally:
        dist.destroy_process_group()


def test_a_disturbance_on_any_rank_reaches_every_rank(tmp_path):
    """The judged rounds are the slowest rank's, so a foreign process on rank 1's GPU disturbed
    them: rank 0, which judges and writes, must hear of it (it judged a FAIL alone)."""
    import torch.multiprocessing as mp

    mp.spawn(_disturbance_of_two_ranks, args=(str(tmp_path / "store"), str(tmp_path / "lines")), nprocs=2)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"lines.{rank}").read_text()) == [[], ["another process on the GPU: pid 7"]]
