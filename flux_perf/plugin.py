"""The pytest plugin: options, the `h100` marker, fixtures, the case parametrization,
machine checks in the header, and the report at the end of the session.

GPU tests are marked `h100` and run only when selected (`pytest -m h100`); without
a CUDA GPU they skip with the reason.
"""

from __future__ import annotations

import contextlib
import shlex

import pytest

from .config import DEFAULT_REPORT_DIR, SuiteConfig
from .scenarios import ScenarioError
from .stacks import StackError

MARKER = "h100"
_SESSION_KEY = pytest.StashKey["object"]()
_CONFIG_KEY = pytest.StashKey["object"]()
_ENV_KEY = pytest.StashKey["list"]()


def pytest_addoption(parser):
    group = parser.getgroup("flux-perf", "flux-perf: FLUX.1-Kontext performance regression suite")
    add = group.addoption
    add("--flux-model", default=None,
        help="synthetic (default on a GPU), tiny, a local diffusers pipeline directory or a hub id "
             "(env FLUX_PERF_MODEL)")
    add("--flux-device", default="cuda", help="device for the GPU tests (default: cuda)")
    add("--flux-stacks", default=None,
        help="comma-separated stacks: named stacks or components joined by '+' "
             "(default: bf16,compile,fp8,fast; `flux-perf stacks` lists them)")
    add("--flux-scenarios", default=None,
        help="comma-separated HxW@STEPS scenarios (default: the guide's four)")
    add("--flux-rounds", type=int, default=5, help="timed rounds per test (default: 5)")
    add("--flux-max-rounds", type=int, default=15,
        help="cap on rounds when an inconclusive verdict asks for more (default: 15)")
    add("--flux-strict", action="store_true", help="an inconclusive latency verdict fails the test")
    add("--flux-report-dir", default=DEFAULT_REPORT_DIR, help=f"report folder (default: {DEFAULT_REPORT_DIR})")
    add("--flux-baselines-dir", default=None, help="baseline store (default: <rootdir>/baselines)")
    add("--flux-update-baselines", action="store_true",
        help="regenerate the bf16 reference images and recorded latencies (on purpose only)")
    add("--flux-force-update", action="store_true", help="allow --flux-update-baselines under CI=true")
    add("--flux-profile", default=None, metavar="SUBSTRING",
        help="record a torch.profiler trace (NVTX stage ranges) for cases whose id contains SUBSTRING")
    add("--flux-inject-slowdown", type=float, default=None, metavar="FRACTION",
        help="test-only: add real extra GPU work worth FRACTION of each step's FLOPs to every stack")
    add("--flux-compile-cache", default=None, metavar="PATH",
        help="load torch.compile cache artifacts from PATH at start and save them there at the end")


def _gpu_selected(config) -> bool:
    return MARKER in (config.option.markexpr or "") and "not " + MARKER not in (config.option.markexpr or "")


def _rank() -> int:
    from .distributed import rank

    return rank()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MARKER}: GPU performance test on the full-size model; run with `pytest -m {MARKER}`"
    )
    from .environment import apply_guide_environment

    # Before anything initialises CUDA: allocator settings are read once.
    config.stash[_ENV_KEY] = apply_guide_environment()
    try:
        config.stash[_CONFIG_KEY] = SuiteConfig.from_pytest(config)
    except (StackError, ScenarioError, ValueError) as error:
        raise pytest.UsageError(f"flux-perf: {error}") from None


def flux_suite_config(config) -> SuiteConfig:
    return config.stash[_CONFIG_KEY]


def _session(config, create: bool = True):
    session = config.stash.get(_SESSION_KEY, None)
    if session is None and create:
        from .budgets import BudgetsError
        from .session import FluxSession

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")

        def log(message: str) -> None:
            if reporter is None or _rank() != 0:
                return
            # Progress must reach the terminal while a test runs (compiles take minutes), so
            # step around output capture the way pytest's live logging does.
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.write_line(f"[flux-perf] {message}")

        suite = flux_suite_config(config)
        try:
            session = FluxSession(suite, log=log)
        except BudgetsError as error:
            raise pytest.UsageError(f"flux-perf: {error}") from None
        session.environment_report = config.stash[_ENV_KEY]
        session.command = shlex.join(["python3", "-m", "pytest", *config.invocation_params.args])
        if suite.compile_cache:
            from . import compile_cache

            compile_cache.load(suite.compile_cache, log)
        config.stash[_SESSION_KEY] = session
    return session


def _case_order(item, positions: dict) -> tuple:
    case = getattr(item, "callspec", None) and item.callspec.params.get("flux_case")
    if case is None:
        return (-1, 0)
    # Case-major, and the test holding the `benchmark` fixture first: it does the measuring,
    # so pytest-benchmark sees the timed rounds; the other tests of the case reuse them.
    return (positions[(case[0].name, case[1].id)], 0 if "benchmark" in item.fixturenames else 1)


def pytest_collection_modifyitems(config, items):
    if _gpu_selected(config):
        suite = flux_suite_config(config)
        cases = [(s.name, c.id) for s in suite.stacks for c in suite.scenarios]
        positions = {case: i for i, case in enumerate(cases)}
        items.sort(key=lambda item: _case_order(item, positions))
        return
    skip = pytest.mark.skip(reason=f"GPU suite: selected only with `pytest -m {MARKER}`")
    for item in items:
        if item.get_closest_marker(MARKER):
            item.add_marker(skip)


def pytest_generate_tests(metafunc):
    if "flux_case" not in metafunc.fixturenames:
        return
    suite = flux_suite_config(metafunc.config)
    # Stack-major order: each stack's pipeline is built once and serves every scenario.
    cases = [(stack, scenario) for stack in suite.stacks for scenario in suite.scenarios]
    metafunc.parametrize("flux_case", cases, ids=[f"{s.name}-{c.id}" for s, c in cases])


@pytest.fixture(scope="session")
def flux_config(request) -> SuiteConfig:
    return flux_suite_config(request.config)


@pytest.fixture(scope="session")
def flux_session(request):
    """The measuring session shared by every GPU test (one pipeline at a time, results cached)."""
    return _session(request.config)


@pytest.fixture
def flux_result(flux_session, flux_case, request):
    """The measured result of this test's (stack, scenario); skips with the reason when the stack
    cannot run on this machine."""
    stack, scenario = flux_case
    reason = flux_session.skip_reason(stack)
    if reason:
        flux_session.record_skip(stack, scenario, reason)
        pytest.skip(reason)
    benchmark = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None
    result = flux_session.case(stack, scenario, benchmark=benchmark)
    if benchmark is not None:
        from .report import case_record

        record = case_record(flux_session, result)
        record.pop("telemetry_samples", None)
        benchmark.extra_info.update(record)
    return result


def pytest_report_header(config):
    if not _gpu_selected(config):
        return None
    from .telemetry import gpu_identity, nvml_unavailable_reason

    suite = flux_suite_config(config)
    lines = [f"flux-perf: stacks {', '.join(s.name for s in suite.stacks)}; "
             f"scenarios {', '.join(c.id for c in suite.scenarios)}; rounds {suite.measure.rounds}"
             f" (max {suite.measure.max_rounds}); report -> {suite.report_dir}"]
    gpu = gpu_identity()
    if gpu:
        lines.append(
            f"flux-perf GPU: {gpu.name}, driver {gpu.driver_version}, CUDA {gpu.cuda_driver_version}, "
            f"power limit {gpu.power_limit_w} W, max SM clock {gpu.max_sm_clock_mhz} MHz"
        )
    else:
        lines.append(f"flux-perf GPU telemetry unavailable: {nvml_unavailable_reason()}")
    applied = [e["name"] for e in config.stash[_ENV_KEY] if e["status"] == "applied"]
    lines.append(f"flux-perf environment applied: {', '.join(applied) or 'none'}")
    return lines


def pytest_benchmark_update_machine_info(config, machine_info):
    from .telemetry import gpu_identity

    gpu = gpu_identity()
    machine_info["gpu"] = gpu.to_dict() if gpu else None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Keep results.json and summary.md current after every test: a run cut short (timeout,
    crash, Ctrl-C) still leaves every finished case on disk."""
    flux = _session(item.config, create=False)
    if flux is None or _rank() != 0:
        return
    reported = (len(flux.cases), len(flux.skipped))
    if reported == flux.reported_cases:  # nothing new since the last write (or nothing at all)
        return
    from .report import write_report

    write_report(flux, flux.config.report_dir, plots=False)
    flux.reported_cases = reported


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    flux = _session(session.config, create=False)
    if flux is None or not (flux.cases or flux.skipped) or _rank() != 0:
        return
    from .report import write_report

    flux.report_paths = write_report(flux, flux.config.report_dir)
    if flux.config.compile_cache:
        from . import compile_cache

        compile_cache.save(flux.config.compile_cache, flux.log)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    flux = _session(config, create=False)
    if flux is None or not flux.report_paths:
        return
    terminalreporter.section("flux-perf")
    for line in flux.report_paths["summary"].read_text().splitlines():
        terminalreporter.write_line(line)
    for message in flux.baseline_updates:
        terminalreporter.write_line(f"baseline updated: {message}")
    terminalreporter.write_line(f"report: {', '.join(str(p) for p in flux.report_paths.values())}")
