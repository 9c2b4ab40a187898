"""The baseline store: keys, provenance, atomic updates, refusals, and every broken-file case."""

import json

import numpy as np
import pytest

from flux_perf.baselines import (
    BaselineCorrupt,
    BaselineKey,
    BaselineMismatch,
    BaselineMissing,
    BaselineStore,
    UpdateRefused,
    stale_reasons,
)
from flux_perf.provenance import software_versions
from flux_perf.scenarios import Scenario

SCENARIO = Scenario(64, 96, 2)
KEY = BaselineKey("nvidia-h100-80gb-hbm3", "synthetic-abc", SCENARIO.id)


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)


@pytest.fixture
def store(tmp_path, monkeypatch, image):
    monkeypatch.delenv("CI", raising=False)
    store = BaselineStore(tmp_path)
    store.save(KEY, image, {"scenario": SCENARIO.to_dict(), "software": software_versions()})
    return store


def test_layout_and_round_trip(store, tmp_path, image):
    png, meta = store.paths(KEY)
    assert png == tmp_path / "nvidia-h100-80gb-hbm3" / "synthetic-abc" / "64x96@2.png"
    baseline = store.load(KEY, SCENARIO)
    assert np.array_equal(baseline.image, image) and baseline.stale == []
    assert json.loads(meta.read_text())["fingerprint"] == "synthetic-abc"
    assert not list(tmp_path.rglob(".*tmp-*")), "atomic writes must not leave temporaries"


def test_missing_names_the_command(tmp_path):
    with pytest.raises(BaselineMissing, match="--flux-update-baselines"):
        BaselineStore(tmp_path).load(KEY, SCENARIO)


def test_other_weights_on_this_gpu_are_pointed_out(store):
    with pytest.raises(BaselineMissing, match="other weights: synthetic-abc"):
        store.load(BaselineKey(KEY.gpu_slug, "pretrained-123", SCENARIO.id), SCENARIO)


def test_corrupt_json(store):
    store.paths(KEY)[1].write_text("{not json")
    with pytest.raises(BaselineCorrupt, match="not valid JSON"):
        store.load(KEY, SCENARIO)


def test_edited_image_is_detected(store):
    png = store.paths(KEY)[0]
    png.write_bytes(png.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BaselineCorrupt, match="does not match the sha256"):
        store.load(KEY, SCENARIO)


def test_half_written_pair(store):
    store.paths(KEY)[0].unlink()
    with pytest.raises(BaselineCorrupt, match="incomplete"):
        store.load(KEY, SCENARIO)


def test_mismatches_say_which(store):
    meta = store.paths(KEY)[1]
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "fingerprint": "synthetic-other"}))
    with pytest.raises(BaselineMismatch, match="made with weights 'synthetic-other'"):
        store.load(KEY, SCENARIO)
    meta.write_text(json.dumps(record))
    with pytest.raises(BaselineMismatch, match="is 64x96, the scenario asks for 64x128"):
        store.load(KEY, Scenario(64, 128, 2))
    with pytest.raises(BaselineMismatch, match="steps=2, the scenario has steps=3"):
        store.load(KEY, Scenario(64, 96, 3))


def test_stale_software_is_reported(store):
    meta = store.paths(KEY)[1]
    record = json.loads(meta.read_text())
    record["software"]["torch"] = "1.13.1"
    meta.write_text(json.dumps(record))
    assert store.load(KEY, SCENARIO).stale == [f"torch 1.13.1 -> {software_versions()['torch']}"]
    assert stale_reasons({}) == []


def test_updates_refused_under_ci_unless_forced(store, monkeypatch, image):
    monkeypatch.setenv("CI", "true")
    before = store.paths(KEY)[0].read_bytes()
    with pytest.raises(UpdateRefused, match="CI=true"):
        store.save(KEY, image[::-1].copy(), {})
    with pytest.raises(UpdateRefused):
        store.record_latency(KEY, "bf16", {"median_s": 1.0})
    assert store.paths(KEY)[0].read_bytes() == before, "a refused update must leave the file alone"
    store.save(KEY, image[::-1].copy(), {"scenario": SCENARIO.to_dict()}, force=True)
    assert np.array_equal(store.load(KEY, SCENARIO).image, image[::-1])


def test_recorded_latency(store):
    assert store.recorded_latency(KEY, "bf16") is None
    store.record_latency(KEY, "bf16", {"median_s": 0.5, "samples_s": [0.5, 0.51]})
    store.record_latency(KEY, "fast", {"median_s": 0.2})
    assert store.recorded_latency(KEY, "bf16")["samples_s"] == [0.5, 0.51]
    assert store.recorded_latency(KEY, "fast")["median_s"] == 0.2


def test_provenance_that_is_not_an_object(store):
    store.paths(KEY)[1].write_text("[1, 2]")
    with pytest.raises(BaselineCorrupt, match="is a JSON list, not an object"):
        store.load(KEY, SCENARIO)


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "must be an object of scenario -> name -> entry"),
    ('{"64x96@2": {"bf16": {"median_s": -0.2}}}', "median_s=-0.2 is not a positive number"),
    ('{"64x96@2": {"bf16": {"median_s": 0.2, "samples_s": "fast"}}}', "samples_s must be a list"),
])
def test_recorded_latencies_that_make_no_sense(store, content, message):
    path = store.root / KEY.folder / "latency.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with pytest.raises(BaselineCorrupt, match=message):
        store.recorded_latency(KEY, "bf16")


def test_a_reference_of_a_redefined_stack_says_so():
    from flux_perf.baselines import components_changed, latency_stale_reasons
    from flux_perf.measure import MEASUREMENT_VERSION
    from flux_perf.provenance import software_versions

    entry = {"stack": "attn-cudnn+fp8-torchao", "software": software_versions(),
             "measurement_version": MEASUREMENT_VERSION}
    assert latency_stale_reasons(entry, None, "attn-cudnn+fp8-torchao") == []
    reasons = latency_stale_reasons(entry, None, "attn-fp8+fp8-torchao")
    assert len(reasons) == 1 and "attn-cudnn+fp8-torchao" in reasons[0] and "now attn-fp8+fp8-torchao" in reasons[0]
    assert components_changed(None, "attn-fp8") == [] and components_changed({"stack": 3}, "attn-fp8") == []
