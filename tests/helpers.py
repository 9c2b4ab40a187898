"""Helpers shared by the CPU tests: the checkout root, the suite's two commands run as users
run them (in a subprocess), budgets for plumbing tests, and results files made to order."""

import os
import subprocess
import sys
from pathlib import Path

from flux_perf.instrument.rounds import summarize
from flux_perf.report.records import CaseRecord, RunResults, write_results

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_BUDGETS = ROOT / "baselines" / "budgets.toml"


def copy_budgets(folder: Path, relative_tolerance: float = 10.0) -> Path:
    """The committed budgets, with a tolerance (1000 %) no CPU timing noise reaches: the plumbing
    tests that use it never depend on wall-clock speed (the gate itself is tested on synthetic
    samples)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = COMMITTED_BUDGETS.read_text()
    lines = [f"relative_tolerance = {relative_tolerance}" if line.startswith("relative_tolerance") else line
             for line in text.splitlines()]
    path = folder / "budgets.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(command, env_extra=None, cwd=ROOT, timeout=600, environ=None):
    env = {**(os.environ if environ is None else environ), "CI": "", **(env_extra or {})}
    # This checkout's flux_perf, also from another folder (an editable install may point elsewhere):
    # the entry point then loads this checkout's plugin.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def run_pytest(*args, cwd=ROOT, env_extra=None, environ=None):
    return _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], env_extra, cwd, environ=environ)


def run_gpu_suite_here(capsys, monkeypatch, *args, cache_dir=None) -> subprocess.CompletedProcess:
    """The suite's real GPU test files in a pytest session inside this process: what the plugin and
    the test files do is what is tested, not a fresh interpreter (5 s of imports a run). Output
    capture is left to the outer session (-s). pytest's cache (--lf) only with a `cache_dir`."""
    import pytest

    monkeypatch.setenv("CI", "")
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    # no:unraisableexception: its clean-up runs 5 full collections a session (seconds in this big process).
    cache = ["-p", "no:cacheprovider"] if cache_dir is None else ["-o", f"cache_dir={cache_dir}"]
    code = pytest.main([*cache, "-p", "no:unraisableexception", "-s", f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"),
                        *map(str, args)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, int(code), out, err)


def run_flux_perf(*args, env_extra=None, cwd=ROOT):
    return _run([sys.executable, "-m", "flux_perf", *args], env_extra, cwd, timeout=300)


def make_results(path: Path, samples: dict, *, gpu="NVIDIA H100 80GB HBM3", fingerprint="synthetic-x",
                 errors: dict | None = None, stages_ms: dict | None = None) -> Path:
    """A results.json whose cases have the given wall-time rounds (and errors)."""
    records = []
    for case, rounds in samples.items():
        stack, _, scenario = case.partition("-")
        records.append(CaseRecord(
            id=case, stack=stack, stack_key=stack, components=stack, lossless=True,
            scenario={"id": scenario}, model="synthetic", fingerprint=fingerprint, gpu=gpu, device="cuda",
            wall_samples_s=list(rounds), error=(errors or {}).get(case), stages_ms=stages_ms,
            wall_s=summarize(rounds) if rounds else None))
    machine = {"gpu_name": gpu, "model": {"source": "synthetic", "fingerprint": fingerprint}}
    return write_results(RunResults(machine=machine, records=records), path)


def attend_through(tiny_model, component, scenario):
    """Generate on the tiny model, apply an attention `component`, generate again:
    (output before, output after, number of attention layers)."""
    from flux_perf.model.generate import generate_with

    reference = generate_with(tiny_model, scenario)
    component.apply(tiny_model.pipe)
    routed = generate_with(tiny_model, scenario)
    transformer = tiny_model.pipe.transformer
    return reference, routed, len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)


def assert_a_new_stack_leaves_the_kernel(tiny_model, calls, scenario):
    """A new stack starts from diffusers' default attention (stacks.restore_default_backend):
    the local kernel, whose `calls` were recorded, sees no call any more."""
    from flux_perf.model.generate import generate_with
    from flux_perf.components.stacks import parse_stack

    calls.clear()
    parse_stack("bf16").apply(tiny_model.pipe)
    generate_with(tiny_model, scenario)
    assert not calls


class _QuietHost:
    def __init__(self, *args, **kwargs):
        pass

    def stall_fraction(self) -> float:
        return 0.0

    def steal_fraction(self) -> float:
        return 0.0


def quiet_host(monkeypatch, stall: float = 0.0, steal: float = 0.0) -> None:
    """The host's CPU pressure during timed rounds reads `stall` and its hypervisor's steal `steal`
    (0: quiet). Tests that record references with the real clock use it: an update refuses rounds
    timed under CPU contention, and this shared test machine is seldom quiet. Over 0.1 either is
    the disturbance."""
    monkeypatch.setattr("flux_perf.instrument.measure.HostPressure",
                        type("Host", (_QuietHost,), {"stall_fraction": lambda self: stall,
                                                     "steal_fraction": lambda self: steal}))


def stand_in_flash_attn_func(calls: list, with_lse: bool = False):
    """A FlashAttention build's `flash_attn_func` on (batch, tokens, heads, dim), through SDPA,
    recording (shape, scale, causal) of each call; `with_lse`: returns (out, lse) as FA4 does."""
    import torch
    import torch.nn.functional as F

    def flash_attn_func(q, k, v, softmax_scale=None, causal=False):
        calls.append((tuple(q.shape), softmax_scale, causal))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             scale=softmax_scale, is_causal=causal).transpose(1, 2).contiguous()
        return (out, torch.zeros(q.shape[0], q.shape[2], q.shape[1])) if with_lse else out

    return flash_attn_func


def finished_calibration():
    """What gate.calibrate.calibrate_scenario returns, for command tests that skip the measuring: a
    real, complete calibration of one exact-math variant and one break."""
    from flux_perf.gate.calibrate import ScenarioCalibration, Variant
    from flux_perf.model.scenarios import Scenario

    return ScenarioCalibration(Scenario(64, 64, 2), "stand-in", [
        Variant("compile-regional", "lossless", [{"1-ssim": 1e-4, "mse": 1e-6, "latent_rel_l2": 1e-3}]),
        Variant("noise:0.01", "break", [{"1-ssim": 2e-4, "mse": 2e-6, "latent_rel_l2": 2e-3}])], 1.5)
