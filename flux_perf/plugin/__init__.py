"""The pytest plugin: options, the `h100` marker, fixtures, the case parametrization,
machine checks in the header, and the report at the end of the session.

Inert unless asked for: in a pytest session that neither selects the GPU suite (`-m h100`)
nor passes a `--flux-*` option nor collects a flux case, it imports nothing heavy (no torch)
and changes no environment variable, so installing flux-perf leaves other projects alone.
Its marker and checks apply only to its own tests (scope.py says which). Beside it: its options
(options.py), the hooks a conftest.py can implement (hookspecs.py), the outcomes of a case not
judged (outcomes.py) and where pytest users see them (surfaces.py: `-r`, the benchmark JSON;
lastfailed.py: `--lf`), and the report writes and end-of-run checks (finish.py); the cases
themselves run in flux_perf.suite, shared with the command line.
"""

from __future__ import annotations

import contextlib
import shlex

import pytest

from ..report.judged import EXIT_NOT_JUDGED
from .outcomes import NOT_JUDGED_LETTERS, Disturbed, FidelityGap, Inconclusive  # noqa: F401 (public)
from .scope import (MARKER, asked_for, flux_options_given, item_case, item_case_id, left_out_cases, marker_declared,
                    marker_selects, own_item, project_root, rootdir_note, selected_cases)

_SESSION_KEY = pytest.StashKey["object"]()
_CONFIG_KEY = pytest.StashKey["object"]()
_ENV_KEY = pytest.StashKey["list"]()
_NO_GPU_KEY = pytest.StashKey["str"]()
_NOT_JUDGED_KEY = pytest.StashKey["list"]()
_WRITTEN_KEY = pytest.StashKey["tuple"]()  # (cases, skips) in the report files already
_PATHS_KEY = pytest.StashKey["dict"]()
_GPU_PASSED_KEY = pytest.StashKey["int"]()  # h100 tests that passed outside the measured cases (kernel checks)
_ADDED_KEY = pytest.StashKey["list"]()  # components registered through pytest_flux_perf_components
_DESELECTED_KEY = pytest.StashKey["list"]()  # test items -k, -m, --deselect or --lf left out
_NOT_SELECTED_KEY = pytest.StashKey["list"]()  # the ids of the cases they left out whole


def pytest_addoption(parser):
    from .options import add_options

    add_options(parser)


def _gpu_selected(config) -> bool:
    """`-m` selects h100 tests (as pytest evaluates it), in a run that asked for flux-perf or
    uses its fixtures (a session exists): a project's own `h100` marker is not a GPU suite."""
    return marker_selects(config.option.markexpr) and (
        asked_for(config) or _session(config, create=False) is not None)


def _rank() -> int:
    from ..instrument.distributed import rank

    return rank()


def pytest_addhooks(pluginmanager):
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_unconfigure(config):
    from .hookspecs import unregister_components

    unregister_components(config.stash.get(_ADDED_KEY, []))
    from .finish import release_signals

    release_signals(config)


def pytest_configure(config):
    from .hookspecs import register_components

    try:
        config.stash[_ADDED_KEY] = register_components(config.hook.pytest_flux_perf_components)
    except ValueError as error:
        raise pytest.UsageError(f"flux-perf: {error}") from None
    from .surfaces import register as show_not_judged

    show_not_judged(config)  # in -r's short summary, the benchmark JSON and --lf: INCONCLUSIVE, DISTURBED, GAP
    if not marker_declared(config):
        config.addinivalue_line(
            "markers", f"{MARKER}: GPU performance test on the full-size model; run with `pytest -m {MARKER}`"
        )
    if not (_gpu_selected(config) or flux_options_given(config)):
        return  # inert: flux_suite_config() builds the settings if a flux case is collected after all
    from ..quiet import quiet_library_notices  # before torch and the rest: they log while importing
    quiet_library_notices()
    from ..instrument.environment import apply_guide_environment
    from .finish import catch_signals

    catch_signals(config)  # SIGTERM as Ctrl-C: a run cut short keeps its cases and is marked interrupted
    # Before anything initialises CUDA: allocator settings are read once.
    config.stash[_ENV_KEY] = apply_guide_environment()
    suite = flux_suite_config(config)
    if _gpu_selected(config):
        from ..suite.config import ConfigError

        try:
            suite.check_destinations()  # before minutes of measuring, not after
        except ConfigError as error:
            raise pytest.UsageError(f"flux-perf: {error}") from None
        _session(config)  # budgets, model source and GPU checked once: one usage error, not one per test


def flux_suite_config(config):
    """The frozen settings of this run, built on first use; bad values are a usage error."""
    suite = config.stash.get(_CONFIG_KEY, None)
    if suite is None:
        from ..store.baselines import BaselineError
        from ..components import ComponentError
        from ..suite.config import ConfigError, SuiteConfig
        from ..model.scenarios import ScenarioError

        try:
            suite = SuiteConfig.from_pytest(config, project_root(config))
        except (ComponentError, ScenarioError, ConfigError, BaselineError, ValueError) as error:
            raise pytest.UsageError(f"flux-perf: {error}") from None
        config.stash[_CONFIG_KEY] = suite
    return suite


def _session(config, create: bool = True):
    session = config.stash.get(_SESSION_KEY, None)
    if session is None and create:
        from ..gate.budgets import BudgetsError
        from ..model.models import ModelSourceError
        from ..suite.session import FluxSession
        from ..store.entries import BaselineError

        def log(message: str) -> None:
            # Looked up on each call: the session is made in pytest_configure, before the reporter.
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            capture = config.pluginmanager.get_plugin("capturemanager")
            if reporter is None or _rank() != 0:
                return
            # Progress must reach the terminal during a test (compiles take minutes): live logging's way.
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.write_line(f"[flux-perf] {message}")

        suite = flux_suite_config(config)
        try:
            session = FluxSession(suite, log=log, environment=config.stash.get(_ENV_KEY, None),
                                  command=shlex.join(["python3", "-m", "pytest", *config.invocation_params.args]))
        except (BudgetsError, ModelSourceError, BaselineError) as error:  # BaselineError: a store an update can't use
            raise pytest.UsageError(f"flux-perf: {error}") from None
        if suite.compile_cache:
            from ..instrument import compile_cache

            compile_cache.load(suite.compile_cache, log)
        session.not_selected = config.stash.get(_NOT_SELECTED_KEY, [])
        config.stash[_SESSION_KEY] = session
    return session


def _case_order(item, positions: dict) -> tuple:
    case = item_case(item)
    if case is None:
        return (-1, 0)
    # Case-major, and the test holding the `benchmark` fixture first: it does the measuring,
    # so pytest-benchmark sees the timed rounds; the other tests of the case reuse them.
    return (positions[(case[0].name, case[1].id)], 0 if "benchmark" in item.fixturenames else 1)


def pytest_collection_modifyitems(config, items):
    if marker_selects(config.option.markexpr):
        if _gpu_selected(config) or any("flux_case" in item.fixturenames for item in items):
            suite = flux_suite_config(config)
            cases = [(s.name, c.id) for s in suite.stacks for c in suite.scenarios]
            positions = {case: i for i, case in enumerate(cases)}
            items.sort(key=lambda item: _case_order(item, positions))
        return  # a project's own h100 tests run as its -m says
    skip = pytest.mark.skip(reason=f"GPU suite: selected only with `pytest -m {MARKER}`")
    everything = asked_for(config)
    for item in items:
        if item.get_closest_marker(MARKER) and own_item(item, everything):
            item.add_marker(skip)


def pytest_deselected(items):
    if items:
        items[0].config.stash.setdefault(_DESELECTED_KEY, []).extend(items)


def pytest_collection_finish(session):
    """The cases the selection left out go into the report: neither measured nor judged, and a
    results.json read later (`ab --undecided-from`) says so instead of looking whole."""
    left_out = left_out_cases(session.config.stash.get(_DESELECTED_KEY, []), session.items)
    session.config.stash[_NOT_SELECTED_KEY] = left_out
    flux = _session(session.config, create=False)
    if flux is not None:  # else the fixture makes it later, and _session gives it the list
        flux.not_selected = left_out


def pytest_generate_tests(metafunc):
    if "flux_case" not in metafunc.fixturenames:
        return
    suite = flux_suite_config(metafunc.config)
    # Stack-major order: each stack's pipeline is built once and serves every scenario.
    cases = [(stack, scenario) for stack in suite.stacks for scenario in suite.scenarios]
    metafunc.parametrize("flux_case", cases, ids=[f"{s.name}-{c.id}" for s, c in cases])


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
    if benchmark is not None and (stack.name, scenario.id) in flux_session.records:
        benchmark.extra_info.update(flux_session.records[(stack.name, scenario.id)].to_dict(samples=False))
    return result


@pytest.fixture
def flux_latency(flux_result):
    """This case's latency verdict (None when the case could not be measured)."""
    return flux_result.latency


def pytest_report_header(config):
    if not _gpu_selected(config):
        return None
    from ..instrument.nvml import gpu_identity, gpu_line

    suite = flux_suite_config(config)
    lines = [f"flux-perf: stacks {', '.join(s.name for s in suite.stacks)}; "
             f"scenarios {', '.join(c.id for c in suite.scenarios)}; rounds {suite.measure.rounds}"
             f" (max {suite.measure.max_rounds}); baselines {suite.baselines_dir}; report -> {suite.report_dir}"]
    flux = _session(config, create=False)
    lines.append(gpu_line(flux.machine.gpu if flux is not None else gpu_identity()))  # this run's card, not card 0
    applied = [e["name"] for e in config.stash.get(_ENV_KEY, []) if e["status"] == "applied"]
    lines.append(f"flux-perf environment applied: {', '.join(applied) or 'none'}")
    return lines + [note for note in [rootdir_note(config, suite.baselines_dir)] if note]


@pytest.hookimpl(optionalhook=True)  # pytest-benchmark's hook: `-p no:benchmark` leaves it unknown
def pytest_benchmark_update_machine_info(config, machine_info):
    flux = _session(config, create=False)
    if flux is None:
        return
    machine_info["gpu"] = flux.machine.gpu.to_dict() if flux.machine.gpu else None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Keep results.json and summary.md current after every test: a run cut short (timeout,
    crash, Ctrl-C) still leaves every finished case on disk."""
    flux = _session(item.config, create=False)
    if flux is None or _rank() != 0:
        return
    written = (len(flux.records), len(flux.skipped))
    if written != item.config.stash.get(_WRITTEN_KEY, (0, 0)):  # something new since the last write
        from .finish import write

        write(flux, item.config, plots=False)
        item.config.stash[_WRITTEN_KEY] = written


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _session(item.config, create=False) is not None:  # flux-perf's run: no access token printed or written
        from ..model.redact import scrub_report
        scrub_report(report)
    if report.when == "call" and call.excinfo is not None and call.excinfo.errisinstance(Inconclusive):
        # What it is about, always a name: its case (named once), else the test itself.
        report.flux_inconclusive = item_case_id(item) or item.nodeid
        report.flux_outcome = call.excinfo.value.outcome
    if report.when == "call" and report.passed and item.get_closest_marker(MARKER) and \
            own_item(item, asked_for(item.config)):
        item.config.stash[_GPU_PASSED_KEY] = item.config.stash.get(_GPU_PASSED_KEY, 0) + 1


def pytest_report_teststatus(report, config):
    """An undecided or disturbed case has its own outcome in the progress line and the final count,
    in yellow."""
    outcome = getattr(report, "flux_outcome", None)
    if outcome in NOT_JUDGED_LETTERS:
        return outcome, NOT_JUDGED_LETTERS[outcome], (outcome.upper(), {"yellow": True})
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    flux = _session(session.config, create=False)
    if flux is None:
        return
    from .finish import fail_unasserted, mark_stopped, write_final
    # Collecting only is not a run that lost its GPU.
    # A GPU test that passed outside the cases (the attention kernel checks) did run on the GPU.
    ran_on_gpu = flux.records or session.config.stash.get(_GPU_PASSED_KEY, 0)
    if _gpu_selected(session.config) and not ran_on_gpu and not session.config.getoption("flux_allow_no_gpu") \
            and not session.config.option.collectonly:
        left_out = (f"no GPU case was selected: -k, -m, --deselect or --lf left out {', '.join(flux.not_selected)}"
                    if flux.not_selected else "no GPU case was collected")
        reasons = sorted({s["reason"] for s in flux.skipped.values()}) or [left_out]
        session.config.stash[_NO_GPU_KEY] = "; ".join(reasons)
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    mark_stopped(session, flux, selected_cases(session.items))  # Ctrl-C, SIGTERM, -x, --sw: a partial run says so
    fail_unasserted(session, flux, (pytest.ExitCode.OK,))  # before exit 6: a failure in the report wins
    not_judged = [] if session.config.getoption("flux_allow_no_gpu") and not ran_on_gpu else flux.not_judged()
    if not_judged and session.exitstatus == pytest.ExitCode.OK:
        session.config.stash[_NOT_JUDGED_KEY] = not_judged
        session.exitstatus = EXIT_NOT_JUDGED  # not 0, which CI reads as green, nor 1 (a failure)
    # A run that selected no case still writes: an earlier run's report must not stand for it.
    if not (flux.records or flux.skipped or flux.not_selected) or _rank() != 0 or session.config.option.collectonly:
        return
    session.config.stash[_PATHS_KEY] = write_final(session, flux, (pytest.ExitCode.OK, EXIT_NOT_JUDGED))
    if flux.config.compile_cache:
        from ..instrument import compile_cache

        compile_cache.save(flux.config.compile_cache, flux.log)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    flux = _session(config, create=False)
    if flux is None:
        return
    no_gpu = config.stash.get(_NO_GPU_KEY, None)
    if no_gpu:
        terminalreporter.section("flux-perf", red=True)
        terminalreporter.write_line(f"FAILED: -m {MARKER} ran no GPU case ({no_gpu}). A gate that measured "
                                    "nothing must not pass; --flux-allow-no-gpu accepts it.", red=True)
    from .finish import section_lines

    lines = section_lines(flux, config, config.stash.get(_PATHS_KEY, None),
                          [r for outcome in NOT_JUDGED_LETTERS for r in terminalreporter.stats.get(outcome, [])],
                          config.stash.get(_NOT_JUDGED_KEY, []))
    if lines:
        terminalreporter.section("flux-perf")
    for line, markup in lines:
        terminalreporter.write_line(line, **markup)
