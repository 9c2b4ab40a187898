"""`flux-perf compare` and `flux-perf table` check a results.json whole before trusting it:
missing keys, wrong types, a null fingerprint, a foreign JSON, timings no run can measure
(negative, zero, NaN) and a case recorded twice are each one message naming the file, the
record and the key, exit 2; never a traceback, a wrong answer or a silently dropped record."""

import json

import pytest
from helpers import make_results

CASE = "bf16-512x512@6"


def _edited(tmp_path, edit, name="bad.json"):
    """A good results.json of one case, changed by `edit(data)`."""
    path = make_results(tmp_path / name, {CASE: [0.65, 0.651, 0.652]}, stages_ms={"step_median": 100.0})
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _set(*keys, value):
    def edit(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


def _drop(key):
    return lambda data: data["records"][0].pop(key)


RECORD = f"record 0 ({CASE})"


@pytest.mark.parametrize("edit, message", [
    (_drop("fingerprint"), f"{RECORD}: key 'fingerprint' is missing"),
    (_set("records", 0, "fingerprint", value=None), f"{RECORD}: key 'fingerprint' is null, expected a string"),
    (_set("machine", "model", "fingerprint", value=None), "key 'machine.model.fingerprint' is null, expected a string"),
    (_set("records", 0, "wall_s", value=[0.65]), f"{RECORD}: key 'wall_s' is list [0.65], expected an object or null"),
    (_set("records", 0, "rounds", value="3"), f"{RECORD}: key 'rounds' is str '3', expected an integer"),
    (_set("records", 0, "lossless", value=1), f"{RECORD}: key 'lossless' is int 1, expected true or false"),
    (_set("records", 0, "scenario", value={"steps": 6}), f"{RECORD}: key 'scenario.id' is null, expected a string"),
    (_set("records", 0, value=["not", "a", "record"]), "record 0 is list ['not', 'a', 'record'], not a record object"),
    (_set("skipped", value=[{"stack": 5, "scenario": "512x512@6"}]), "skipped 0: key 'stack' is int 5"),
    (_set("not_selected", value="bf16-512x512@6"), "key 'not_selected' is str 'bf16-512x512@6', expected a list"),
    (_set("not_selected", value=[["bf16", "512x512@6"]]), "not_selected 0 is list ['bf16', '512x512@6'], not a case id"),
    # The typed keys, each read whole (report/verdicts.py).
    (lambda data: data["records"][0]["wall_s"].pop("q1"), f"{RECORD}: key 'wall_s.q1' is missing"),
    (_set("records", 0, "latency", value="pass"), f"{RECORD}: key 'latency' is str 'pass', expected an object or null"),
    (_set("records", 0, "latency", value={"failed": False}), f"{RECORD}: key 'latency.verdict' is missing"),
    (_set("records", 0, "latency", value={"verdict": "pass", "budget": {"seconds": 0.4, "source": "recorded"}}),
     f"{RECORD}: key 'latency.budget.kind' is missing"),
    (_set("records", 0, "latency", value={"verdict": "pass", "checks": [{}]}),
     f"{RECORD}: key 'latency.checks.0.budget' is missing"),
    (_set("records", 0, "fidelity", value={"verdict": "pass", "stale": ["torch", 3]}),
     f"{RECORD}: key 'fidelity.stale.1' is int 3, expected a string"),
    (_set("records", 0, "fidelity", value={"verdict": "pass", "band": {"psnr": 50.0}}),
     f"{RECORD}: key 'fidelity.band.ssim' is missing"),
    (_set("records", 0, "target", value={"seconds": 0.5, "met": "yes", "gap_s": 0.1}),
     f"{RECORD}: key 'target.met' is str 'yes', expected true or false"),
])
def test_wrong_types_and_missing_keys_name_the_file_and_the_key(tmp_path, cli, edit, message):
    bad = _edited(tmp_path, edit)
    good = make_results(tmp_path / "good.json", {CASE: [0.65, 0.651, 0.652]}, stages_ms={"step_median": 100.0})
    for result in (cli("compare", good, bad), cli("table", bad)):
        assert result.returncode == 2 and "[Errno" not in result.stderr
        assert f"flux-perf: {bad}: {message}" in result.stderr, result.stderr
        assert "use the results.json a flux-perf run wrote" in result.stderr, "and what to do"


@pytest.mark.parametrize("content, message", [
    ('{"flux_perf_ab": 2, "cases": []}', " is not a flux-perf results.json (a flux_perf_ab file)"),
    ('[1, 2, 3]', " is not a flux-perf results.json (no 'records')"),
    ('{"flux_perf_results": 3, "records": {"a": 1}}', ": key 'records' is dict, expected a list"),
])
def test_a_foreign_json_is_named(tmp_path, cli, content, message):
    foreign = tmp_path / "foreign.json"
    foreign.write_text(content)
    for result in (cli("compare", foreign, foreign), cli("table", foreign)):
        assert result.returncode == 2 and f"flux-perf: {foreign}{message}" in result.stderr


@pytest.mark.parametrize("edit, key, shown", [
    (_set("records", 0, "wall_samples_s", value=[-1.5, 0.651, 0.652]), "wall_samples_s", "holds float -1.5"),
    (_set("records", 0, "wall_samples_s", value=[0.0, 0.651, 0.652]), "wall_samples_s", "holds float 0.0"),
    (_set("records", 0, "wall_samples_s", value=[float("nan"), 0.651, 0.652]), "wall_samples_s", "holds float nan"),
    (_set("records", 0, "wall_s", "median", value=-1.5), "wall_s.median", "is float -1.5"),
    (_set("records", 0, "stages_ms", "step_median", value=0), "stages_ms.step_median", "is int 0"),
])
def test_timings_no_run_can_measure_are_refused_naming_the_case(tmp_path, cli, edit, key, shown):
    base = make_results(tmp_path / "base.json", {CASE: [0.65, 0.651, 0.652]}, stages_ms={"step_median": 100.0})
    bad = _edited(tmp_path, edit)
    compared, tabled = cli("compare", base, bad), cli("table", bad)
    for result in (compared, tabled):
        assert result.returncode == 2
        assert f"{bad}: {RECORD}: key '{key}' {shown}: timings are positive, finite seconds" in result.stderr
    assert "faster" not in compared.stdout and "-1.500" not in tabled.stdout


def test_an_integer_beyond_any_float_is_refused_not_a_traceback(tmp_path, cli):
    bad = _edited(tmp_path, _set("records", 0, "wall_s", "median", value=10 ** 400))
    result = cli("table", bad)
    assert result.returncode == 2
    assert f"{RECORD}: key 'wall_s.median' is int 1000" in result.stderr and "finite seconds" in result.stderr


def test_a_negative_duration_is_refused(tmp_path, cli):
    bad = _edited(tmp_path, _set("records", 0, "compile_s", value=-3.0))
    result = cli("table", bad)
    assert result.returncode == 2
    assert f"{RECORD}: key 'compile_s' is float -3.0: a duration is never negative" in result.stderr


def test_a_case_recorded_twice_is_an_error_naming_it(tmp_path, cli):
    def twice(data):
        second = dict(data["records"][0], wall_samples_s=[9.0, 9.1, 9.2])
        data["records"].append(second)

    doubled = _edited(tmp_path, twice)
    good = make_results(tmp_path / "good.json", {CASE: [0.65, 0.651, 0.652]}, stages_ms={"step_median": 100.0})
    for result in (cli("compare", good, doubled), cli("compare", doubled, good), cli("table", doubled)):
        assert result.returncode == 2
        assert f"{doubled}: case id '{CASE}' appears twice (records 0 and 1)" in result.stderr


def test_every_committed_results_file_still_reads(cli):
    from pathlib import Path

    from helpers import ROOT

    from flux_perf.report.records import read_results

    files = [p for p in sorted((ROOT / "docs").rglob("*.json")) if '"flux_perf_results"' in p.read_text()[:200]
             or '"records"' in p.read_text()]
    assert len(files) > 20
    for path in files:
        read_results(Path(path))  # a compile-regional:max-autotune record used to raise ComponentError
