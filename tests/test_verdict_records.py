"""A record's rounds, verdicts and target are typed, frozen objects (report/verdicts.py), dicts only in
results.json: every committed results file (schemas 1-3) reads into them and writes back what it
holds, and a judge's verdict is written exactly as the judge's own to_dict() says it."""

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import ROOT, make_results

from flux_perf.gate.budgets import LatencyBudget
from flux_perf.gate.fidelity import FidelityResult, FidelityVerdict
from flux_perf.gate.latency import Verdict, judge_latency
from flux_perf.report.judged import LATENCY_UNJUDGED
from flux_perf.report.records import CaseRecord, read_results
from flux_perf.report.verdicts import FidelityRecord, LatencyRecord
from flux_perf.store.entries import Band, FidelityEntry
from flux_perf.store.provenance import Provenance

TYPED = ("wall_s", "latency", "fidelity", "target")
# Keys of an older schema that no reader used and version 3 no longer writes.
DROPPED = {"calibration"}  # schema 2's fidelity: the calibration entry, now its `band`


def _committed() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted((ROOT / "docs").rglob("*.json")):
        payload = json.loads(path.read_text())
        if isinstance(payload, dict) and "flux_perf_results" in payload:
            found.append((path, payload))
    return found


def _dumped(value) -> str:
    return json.dumps(value, default=str)  # as write_json writes it, key order included


def _holds(written, read, where: str) -> None:
    """Every key (at any depth) of what the file held is written back with its value."""
    if isinstance(read, dict) and isinstance(written, dict):
        for key in set(read) - DROPPED:
            assert key in written, f"{where}.{key} not written back"
            _holds(written[key], read[key], f"{where}.{key}")
    else:
        assert _dumped(written) == _dumped(read), where


def test_every_committed_results_file_round_trips():
    files = _committed()
    assert len(files) > 20 and {payload["flux_perf_results"] for _, payload in files} == {1, 2, 3}
    for path, payload in files:
        for i, data in enumerate(payload["records"]):
            record = CaseRecord.from_dict(data, f"{path}: record {i}")
            written = record.to_dict()
            again = CaseRecord.from_dict(written)
            assert _dumped(again.to_dict()) == _dumped(written), f"{path} {record.id}: not stable"
            for key in TYPED:
                _holds(written[key], data.get(key), f"{path.name} {record.id} {key}")
            if payload["flux_perf_results"] == 3:  # the current shape: byte for byte, key order included
                _holds(written, data, f"{path.name} {record.id}")
                for key in TYPED:
                    assert _dumped(written[key]) == _dumped(data.get(key)), f"{path.name} {record.id} {key}"


def test_a_read_record_holds_typed_frozen_verdicts():
    path = ROOT / "docs" / "results" / "gate-session12.json"
    record = next(r for r in read_results(path).records if r.latency and r.latency.checks and r.fidelity.band)
    assert isinstance(record.latency, LatencyRecord) and isinstance(record.fidelity, FidelityRecord)
    assert isinstance(record.fidelity.band, Band) and record.wall_s.median == record.median_s
    assert record.latency.checks[0].budget.kind == "relative" and record.latency.checks[0].ratio.reached in (True, False)
    with pytest.raises(AttributeError):
        record.latency.detection_limt  # noqa: B018 - a typo is an error, not a silent None
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.latency.verdict = "pass"


def test_an_older_file_reads_as_its_readers_always_read_it():
    """Keys an older flux-perf did not write take the value a `.get()` of them gave: no checks, no
    detection limit, nothing failed that the file did not say failed."""
    payload = json.loads((ROOT / "docs" / "results" / "run1.json").read_text())
    assert payload["flux_perf_results"] == 1
    record = CaseRecord.from_dict(payload["records"][0])
    latency, fidelity = record.latency, record.fidelity
    assert latency.verdict == payload["records"][0]["latency"]["verdict"] and latency.checks == ()
    assert latency.detection_limit is None and latency.disturbance == () and latency.missing is None
    assert fidelity.gap is None and fidelity.band is None and fidelity.failed is False and fidelity.reasons == ()


def _budgets(reference_s=0.5, rounds=(0.5, 0.501, 0.499, 0.5, 0.502, 0.5, 0.498, 0.5)):
    return [LatencyBudget(reference_s * 1.03, "relative", "recorded 0.500 s + 3%", 0.03, tuple(rounds), 1980.0,
                          ("torch 2.0 -> 2.1",), reference_s),
            LatencyBudget(0.8, "absolute", "budgets.toml [H100] 512x512@6 bf16")]


@pytest.mark.parametrize("samples, kwargs, verdict", [
    ([0.5, 0.501, 0.5, 0.499, 0.5, 0.5, 0.501, 0.5], {}, Verdict.PASS),
    ([0.6, 0.61, 0.6, 0.605, 0.6, 0.6, 0.61, 0.6], {}, Verdict.FAIL),
    ([0.6, 0.61, 0.6, 0.605, 0.6, 0.6, 0.61, 0.6], {"disturbance": ["thermal slow-down"]}, Verdict.DISTURBED),
    ([0.4, 0.41, 0.4, 0.405, 0.4, 0.4, 0.41, 0.4], {"strict": True}, Verdict.PASS),  # faster
    ([0.5, 0.55], {}, Verdict.INCONCLUSIVE),  # too few rounds
    ([0.5, 0.5, 0.5], {"missing": "no reference: run flux-perf baselines update"}, Verdict.NO_REFERENCE),
    ([0.5, 0.5, 0.5], {"recording": True}, Verdict.RECORDED),  # a sanctioned update, no budget
])
def test_a_latency_verdict_is_written_as_the_judge_wrote_it(samples, kwargs, verdict):
    budgets = [] if kwargs.get("recording") else _budgets()
    result = judge_latency(samples, budgets, looks=2, **kwargs)
    assert result.verdict is verdict
    record = LatencyRecord.from_dict(result.to_dict())
    assert _dumped(record.to_dict()) == _dumped(result.to_dict())
    assert record.verdict == result.verdict and record.failed == result.failed
    assert record.detection_limit == result.detection_limit and len(record.checks) == len(result.checks)


def test_every_unjudged_latency_verdict_is_the_gates():
    assert set(LATENCY_UNJUDGED) <= {verdict.value for verdict in Verdict}


def test_a_fidelity_verdict_is_written_as_the_judge_wrote_it():
    provenance = Provenance.from_json({"commit": "abc", "recorded_at": "2026-01-01T00:00:00+00:00"})
    recorded = FidelityEntry(0.998, 41.5, 0.003, "ab" * 32, "fast", False, provenance, "cd" * 32)
    for result in (FidelityResult(FidelityVerdict.ERROR, message="no bf16 baseline for this scenario"),
                   FidelityResult(FidelityVerdict.FAIL, 0.97, None, 0.02, 0.999, "lossy default", "b.png", "e.png",
                                  None, ("torch changed",), ("SSIM 0.97 < 0.999",), recorded, Band(0.9995, 50.0, 0.004),
                                  True, 0.019, None, True)):
        record = FidelityRecord.from_dict(result.to_dict())
        assert _dumped(record.to_dict()) == _dumped(result.to_dict())
        assert record.verdict == result.verdict and record.failed == result.failed and record.stale == result.stale


def test_a_record_is_unchanged_by_the_round_trip(tmp_path):
    (record,) = read_results(make_results(tmp_path / "results.json", {"bf16-512x512@6": [0.4, 0.41, 0.42]})).records
    verdicts = judge_latency([0.4, 0.41, 0.42], _budgets(0.4, (0.4, 0.4, 0.41)))
    record = dataclasses.replace(record, latency=LatencyRecord.from_dict(verdicts.to_dict()),
                                 fidelity=FidelityRecord("pass", 0.9999, 55.0, gap="no calibration"))
    assert CaseRecord.from_dict(record.to_dict()) == record
    assert _dumped(CaseRecord.from_dict(record.to_dict()).to_dict()) == _dumped(record.to_dict())
