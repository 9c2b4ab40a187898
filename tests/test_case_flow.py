"""One case's data flows one way: after the runner has measured, the session hands the rounds and
the references to the judges and the record, without going back and forth to the store.

How it is counted (`python3 -m pytest tests/test_case_flow.py -s` prints the flows): every call
made from a function of suite/session.py into another flux_perf module is traced, from the moment the
runner's measure returns until the case's record is built (reading a property of a value the
session holds is not a call into a module); consecutive calls into the same module are one visit;
a return is a visit to a module already visited before another one.
"""

import importlib
import inspect
import pkgutil
import sys

import pytest
from helpers import copy_budgets

from flux_perf.components.stacks import parse_stacks
from flux_perf.instrument.measure import MeasureSettings
from flux_perf.model.scenarios import Scenario
from flux_perf.suite.config import SuiteConfig
from flux_perf.suite.session import FluxSession

SCENARIO = Scenario(64, 64, 2)


def _session(tmp_path, update: bool) -> FluxSession:
    config = SuiteConfig(model="tiny", device="cpu", stacks=parse_stacks("bf16"), scenarios=(SCENARIO,),
                         measure=MeasureSettings(rounds=3, max_rounds=3), strict=False,
                         report_dir=tmp_path / "report", baselines_dir=tmp_path / "baselines",
                         update_baselines=update, force_update=False, scripted_clock=0.1)
    return FluxSession(config, log=lambda _: None)


def _property_code() -> set:
    """The code of every property getter of flux_perf's classes."""
    import flux_perf

    codes = set()
    for info in pkgutil.walk_packages(flux_perf.__path__, "flux_perf."):
        if info.name.endswith(("ab.worker", "__main__")):
            continue
        for _, cls in inspect.getmembers(importlib.import_module(info.name), inspect.isclass):
            codes |= {p.fget.__code__ for p in vars(cls).values() if isinstance(p, property) and p.fget}
    return codes


def _flow(session: FluxSession) -> list[str]:
    """The modules the session called into after the measurement, consecutive repeats merged."""
    visits: list[str] = []
    measured = False
    properties = _property_code()

    def profile(frame, event, arg):
        nonlocal measured
        caller = frame.f_back
        if event not in ("call", "return") or caller is None or frame.f_code in properties \
                or caller.f_globals.get("__name__") != "flux_perf.suite.session":
            return
        module = frame.f_globals.get("__name__", "")
        if event == "return" and frame.f_code.co_name == "measure" and module == "flux_perf.instrument.runner":
            measured = True
        elif event == "call" and measured and module.startswith("flux_perf.") and module != "flux_perf.suite.session":
            if not visits or visits[-1] != module:
                visits.append(module)

    sys.setprofile(profile)
    try:
        result = session.case(session.config.stacks[0], SCENARIO)
    finally:
        sys.setprofile(None)
    assert result.error is None, f"the case failed, so its flow is not the one under test: {result.error}"
    return visits


def _returns(visits: list[str]) -> int:
    return len(visits) - len(set(visits))


@pytest.mark.parametrize("update", [True, False], ids=["update", "gate"])
def test_a_case_flows_from_measurement_to_record_one_way(tmp_path, monkeypatch, update):
    monkeypatch.delenv("CI", raising=False)
    copy_budgets(tmp_path / "baselines")
    if not update:
        recorded = _session(tmp_path, update=True).case(parse_stacks("bf16")[0], SCENARIO)
        assert recorded.error is None, recorded.error
    visits = _flow(_session(tmp_path, update))
    print(f"\n{'update' if update else 'gate'}: " + " -> ".join(v.removeprefix("flux_perf.") for v in visits)
          + f" ({_returns(visits)} returns)")
    assert visits[-1] == "flux_perf.report.records", "the record is built last, from the case"
    assert _returns(visits) == 0, visits  # docs/architecture.md: one way, no module visited twice
