"""The pytest options of the suite (the plugin's __init__.py registers them): what a run
measures, where it reports, and the test-only plants."""

from __future__ import annotations

from .. import DEFAULT_REPORT_DIR, TELEMETRY_INTERVAL_S
from ..suite.values import named, positive_seconds


def add_options(parser) -> None:
    """Every --flux-* option, in one group of `pytest --help`."""
    group = parser.getgroup("flux-perf", "flux-perf: FLUX.1-Kontext performance regression suite")
    add = group.addoption
    add("--flux-model", type=named, default=None,
        help="synthetic (default on a GPU), tiny, a local diffusers pipeline directory or hub:OWNER/NAME "
             "(env FLUX_PERF_MODEL)")
    add("--flux-device", default="cuda", help="device for the GPU tests (default: cuda)")
    add("--flux-stacks", default=None,
        help="comma-separated stacks: named stacks or components joined by '+' "
             "(default: bf16,compile,fp8,fast; `flux-perf stacks` lists them)")
    add("--flux-scenarios", default=None,
        help="comma-separated HxW@STEPS scenarios (default: the guide's four)")
    add("--flux-rounds", type=int, default=8, help="timed rounds per test before the first look (default: 8)")
    add("--flux-max-rounds", type=int, default=32,
        help="while a verdict is undecided the rounds double, up to this many (default: 32)")
    add("--flux-max-case-seconds", type=float, default=90.0,
        help="no more rounds once a case's timed rounds would pass this many seconds (default: 90)")
    add("--flux-telemetry-interval", type=positive_seconds, default=TELEMETRY_INTERVAL_S, metavar="SECONDS",
        help="seconds between NVML samples of the GPU during the timed rounds (default: %(default)s). The sampler is "
             "a thread of the measured process and each sample makes about ten driver calls: a longer interval "
             "tests whether sampling slows host-bound cases (a value past the rounds samples only at start and end)")
    add("--flux-strict", action="store_true",
        help="a case that could not be judged fails: an inconclusive latency verdict, a fidelity gap (no "
             "calibration, or no recorded fidelity of a lossy stack). CI passes it")
    add("--flux-enforce-targets", action="store_true",
        help="the guide's targets (budgets.toml [latency.targets]) fail the test when missed; "
             "otherwise they are only reported")
    add("--flux-allow-no-gpu", action="store_true",
        help="under -m h100, a run in which no GPU case could run passes (by default it fails)")
    add("--flux-report-dir", type=named, default=DEFAULT_REPORT_DIR, help=f"report folder (default: {DEFAULT_REPORT_DIR})")
    add("--flux-baselines-dir", type=named, default=None,
        help="baseline store (default: <rootdir>/baselines); a relative one starts where pytest runs, or at the "
             "ini file's folder when its addopts name it")
    add("--flux-update-baselines", action="store_true",
        help="re-record the selected stacks' references and the bf16 images (on purpose only)")
    add("--flux-force-update", action="store_true", help="allow --flux-update-baselines under CI")
    add("--flux-profile", type=named, default=None, metavar="SUBSTRING",
        help="record a torch.profiler trace (NVTX stage ranges) for cases whose id contains SUBSTRING")
    add("--flux-inject-slowdown", type=float, default=None, metavar="FRACTION",
        help="test-only: add real extra GPU work worth FRACTION of each step's time to every stack")
    add("--flux-plant", default=None, metavar="COMPONENTS",
        help="test-only: add components to every stack under its own name, to prove the gates "
             "(noise:0.01, wrong-shift, attn-flash-sdpa, ...)")
    add("--flux-scripted-clock", type=float, default=None, metavar="SECONDS",
        help="test-only, CPU only: every round takes SECONDS of scripted wall time, so the gate's logic is "
             "tested without the machine's speed")
    add("--flux-compile-cache", type=named, default=None, metavar="PATH",
        help="load torch.compile cache artifacts from PATH at start and save them there at the end")
