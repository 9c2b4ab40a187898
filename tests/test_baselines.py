"""The baseline store and a case's references: keys, typed entries, provenance and staleness,
atomic updates, refusals, the schema version, and every broken-file case."""

import hashlib
import io
import json
import pickle
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest

from flux_perf.components.stacks import parse_stack
from flux_perf.instrument.measure import MEASUREMENT_VERSION
from flux_perf.model.scenarios import Scenario
from flux_perf.store.baselines import BaselineKey, BaselineMismatch, BaselineMissing, BaselineStore, BaselineUnwritable
from flux_perf.store.entries import (
    Band,
    BaselineCorrupt,
    CalibrationEntry,
    FidelityEntry,
    LatencyEntry,
    SchemaError,
    Spread,
    UpdateRefused,
)
from flux_perf.store.migrate import migrate_folder
from flux_perf.store.provenance import Provenance, component_code, software_versions, stale_reasons
from flux_perf.store.references import check_latent_shapes, load_references

SCENARIO = Scenario(64, 96, 2)
KEY = BaselineKey("nvidia-h100-80gb-hbm3", "synthetic-abc", SCENARIO.id)


def now(stack="bf16", driver="580.1"):
    return Provenance.now(driver, component_code(parse_stack(stack).components))


def command(stack, scenario, action="baselines update"):
    return f"flux-perf {action} --stacks {stack} --scenarios {scenario}"


def references(store, stack="bf16", provenance=None):
    return load_references(store, KEY, SCENARIO, parse_stack(stack), provenance or now(stack),
                           measurement_version=MEASUREMENT_VERSION, record_command=command)


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)


@pytest.fixture
def store(tmp_path, monkeypatch, image):
    monkeypatch.delenv("CI", raising=False)
    store = BaselineStore(tmp_path)
    record = {"scenario": SCENARIO.to_dict(), "provenance": now().to_json()}
    store.write_baseline(KEY, image, np.ones((4, 8, 12), np.float32), record, force=False)
    return store


@pytest.mark.parametrize("provenance", [["x"], "x", {"software": ["torch"]}])
def test_a_baselines_provenance_of_the_wrong_shape_names_the_file(store, provenance):
    meta = store.paths(KEY)[1]
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "provenance": provenance}))
    with pytest.raises(BaselineCorrupt, match=f"{meta}: provenance"):
        store.load_baseline(KEY, SCENARIO)


def latency(median=0.5, stack="bf16", provenance=None):
    return LatencyEntry(median, (median * 0.99, median * 1.01), parse_stack(stack).key, provenance or now(stack),
                        measurement_version=MEASUREMENT_VERSION)


def test_layout_and_round_trip(store, tmp_path, image):
    png, meta = store.paths(KEY)
    assert png == tmp_path / "nvidia-h100-80gb-hbm3" / "synthetic-abc" / "64x96@2.png"
    baseline = store.load_baseline(KEY, SCENARIO)
    assert np.array_equal(baseline.image, image) and baseline.latents.shape == (4, 8, 12)
    assert json.loads(meta.read_text())["fingerprint"] == "synthetic-abc"
    assert not list(tmp_path.rglob(".*tmp-*")), "atomic writes must not leave temporaries"


def test_a_case_is_loaded_once_with_what_is_missing_and_the_command_that_records_it(store):
    refs = references(store, "fast")
    assert refs.baseline is not None and refs.latency is None and refs.calibration is None
    assert refs.problems["latency"] == ("no recorded latency for fast at 64x96@2 on nvidia-h100-80gb-hbm3 with "
                                        "weights synthetic-abc: record it with "
                                        "`flux-perf baselines update --stacks fast --scenarios 64x96@2`")
    store.write_latency(KEY, "fast", latency(0.2, "fast"), force=False)
    assert references(store, "fast").latency.median_s == 0.2 and "latency" not in references(store, "fast").problems


def test_no_baseline_image_is_a_problem_naming_bf16s_command(tmp_path):
    refs = references(BaselineStore(tmp_path), "fast")
    assert refs.baseline is None and "record it with `flux-perf baselines update --stacks bf16" in \
        refs.problems["baseline"]
    assert not BaselineStore(tmp_path).has_references(KEY.gpu_slug, KEY.fingerprint)


@pytest.mark.parametrize("damage, problem, message", [
    (lambda s: s.paths(KEY)[1].write_text("{not json"), "baseline", "not valid JSON"),
    (lambda s: s.paths(KEY)[0].write_bytes(s.paths(KEY)[0].read_bytes()[:-10] + b"0123456789"), "baseline",
     "does not match the sha256"),
    (lambda s: s.paths(KEY)[0].unlink(), "baseline", "incomplete"),
    (lambda s: s.paths(KEY)[1].write_text("[1, 2]"), "baseline", "is a JSON list, not an object"),
    (lambda s: s.latents_path(KEY).write_bytes(b"edited"), "baseline", "do not match the sha256"),
])
def test_broken_files_are_problems_never_references(store, damage, problem, message):
    damage(store)
    refs = references(store)
    assert refs.baseline is None and message in refs.problems[problem]


def test_mismatches_say_which(store):
    meta = store.paths(KEY)[1]
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "fingerprint": "synthetic-other"}))
    with pytest.raises(BaselineMismatch, match="made with weights 'synthetic-other'"):
        store.load_baseline(KEY, SCENARIO)
    meta.write_text(json.dumps(record))
    with pytest.raises(BaselineMismatch, match="is 64x96, the scenario asks for 64x128"):
        store.load_baseline(KEY, Scenario(64, 128, 2))
    with pytest.raises(BaselineMismatch, match="steps=2, the scenario has steps=3"):
        store.load_baseline(KEY, Scenario(64, 96, 3))
    with pytest.raises(BaselineMissing):
        store.load_baseline(BaselineKey(KEY.gpu_slug, KEY.fingerprint, "64x96@3"), Scenario(64, 96, 3))


@pytest.mark.parametrize("content, message", [
    ('{"flux_perf_store": 2, "entries": [1, 2]}', "must be an object of scenario -> name -> entry"),
    ('{"flux_perf_store": 2, "entries": {"64x96@2": {"bf16": {"median_s": -0.2}}}}', "median_s=-0.2 is not a positive"),
    ('{"flux_perf_store": 2, "entries": {"64x96@2": {"bf16": {"median_s": 0.2, "samples_s": "fast"}}}}',
     "samples_s must be a list"),
    ('{"64x96@2": {"bf16": {"median_s": 0.2}}}', "no schema version (written before flux-perf versioned its store"),
    ('{"flux_perf_store": 9, "entries": {}}', "schema version 9; this flux-perf reads version 2"),
])
def test_recorded_latencies_that_make_no_sense(store, content, message):
    (store.folder(KEY) / "latency.json").write_text(content)
    refs = references(store)
    assert refs.latency is None and message in refs.problems["latency"]
    with pytest.raises(BaselineCorrupt):
        store.table(KEY, "latency.json")


def test_an_old_schema_names_the_migration(store):
    (store.folder(KEY) / "fidelity.json").write_text('{"64x96@2": {"bf16": {"ssim": 1.0}}}')
    with pytest.raises(SchemaError, match=r"flux-perf baselines migrate .*synthetic-abc"):
        store.table(KEY, "fidelity.json")


def test_a_newer_schema_names_no_migration_that_refuses_it(store):
    """Version 3 was told `Convert it with flux-perf baselines migrate FOLDER`, which converts only 1."""
    (store.folder(KEY) / "latency.json").write_text('{"flux_perf_store": 3, "entries": {}}')
    with pytest.raises(SchemaError) as caught:
        store.table(KEY, "latency.json")
    assert "has schema version 3; this flux-perf reads version 2 and converts only version 1" in str(caught.value)
    assert "Convert it with" not in str(caught.value) and "re-record it with: flux-perf baselines update" in \
        str(caught.value)
    with pytest.raises(SchemaError, match="converts only version 1"):
        migrate_folder(store.folder(KEY))


@pytest.mark.parametrize("name, content, message", [
    ("64x96@2.json", {"flux_perf_store": 3, "provenance": {"recorded_at": "2027-01-01", "software": {"t": "1"}}},
     "schema version 3"),
    ("latency.json", {"flux_perf_store": 3, "entries": {}}, "schema version 3"),
    ("latency.json", [1, 2], "JSON list"),
    ("latency.json", {"64x96@2": [1]}, "scenario -> stack -> entry"),
])
def test_migration_refuses_what_is_not_schema_1_and_rewrites_nothing(tmp_path, name, content, message):
    folder = tmp_path / "gpu" / "weights"
    folder.mkdir(parents=True)
    old = {"64x96@2": {"cudnn": {"median_s": 0.3, "samples_s": [0.3], "stack": "attn-cudnn"}}}
    (folder / "fidelity.json").write_text(json.dumps(old))  # schema 1, sorted before the bad file
    (folder / name).write_text(json.dumps(content))
    before = {p.name: p.read_text() for p in folder.iterdir()}
    with pytest.raises(SchemaError, match=message):
        migrate_folder(folder)
    assert {p.name: p.read_text() for p in folder.iterdir()} == before


def test_migration_keeps_every_value_and_regroups_the_provenance(tmp_path):
    folder = tmp_path / "gpu" / "weights"
    folder.mkdir(parents=True)
    old = {"median_s": 0.3, "samples_s": [0.29, 0.3, 0.31], "stack": "attn-cudnn", "commit": "abc-dirty",
           "driver_version": "580.1", "software": {"torch": "2.11.0"}, "recorded_at": "2026-11-26",
           "measurement_version": 2}
    (folder / "latency.json").write_text(json.dumps({"64x96@2": {"cudnn": old}}))
    assert migrate_folder(folder) == [f"{folder / 'latency.json'}: schema 1 -> 2"]
    entry = BaselineStore(tmp_path).table(BaselineKey("gpu", "weights", "64x96@2"), "latency.json")["cudnn"]
    assert entry.median_s == 0.3 and entry.samples_s == (0.29, 0.3, 0.31) and entry.measurement_version == 2
    assert (entry.provenance.commit, entry.provenance.driver, entry.provenance.software) == \
        ("abc", "580.1", {"torch": "2.11.0"})
    assert "not hashed" in entry.provenance.uncommitted
    assert migrate_folder(folder) == [f"{folder / 'latency.json'}: already schema 2"]


def test_staleness_sees_software_driver_and_a_components_own_code(store):
    recorded = now("fast")
    older = replace(recorded, software={**recorded.software, "torch": "1.13.1", "cudnn": "8.9.7"},
                    driver="570.0", components={**recorded.components, "fused-qkv": "000000000000"})
    reasons = stale_reasons(older, recorded)
    assert f"torch 1.13.1 -> {software_versions()['torch']}" in reasons
    assert "driver 570.0 -> 580.1" in reasons
    assert any(r.startswith("the code of component fused-qkv changed (000000000000 -> ") for r in reasons)
    assert stale_reasons(recorded, recorded) == []
    store.write_latency(KEY, "fast", latency(0.2, "fast", older), force=False)
    assert any("fused-qkv" in r for r in references(store, "fast").stale["latency"])


def test_the_code_a_component_imports_from_other_component_modules_is_hashed_too(monkeypatch):
    """FLUX's processor body (flux_processor.py) and the layer lists (layers.py) run inside
    attn-fp8:static and rope-halves without being their classes: a change there makes their
    references stale, under a key of its own (entries recorded before it keep their hashes)."""
    components = parse_stack("fast").components
    code = component_code(components)
    assert code["rope-halves (helpers)"] == code["attn-fp8:static (helpers)"]
    assert "cuda-graphs (helpers)" not in code, "cuda_graphs.py takes nothing from another component module"
    read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda path: read(path) + (b"#" if path.name == "flux_processor.py" else b""))
    changed = component_code(components)
    assert {k for k in code if code[k] != changed[k]} == {"attn-fp8:static (helpers)", "rope-halves (helpers)"}
    recorded = replace(now("fast"), components=code)
    reasons = stale_reasons(recorded, replace(recorded, components=changed))
    assert any(r.startswith("the code of component rope-halves (helpers) changed") for r in reasons)
    before_helpers = replace(recorded, components={k: v for k, v in code.items() if "helpers" not in k})
    assert stale_reasons(before_helpers, replace(recorded, components=changed)) == [], \
        "entries recorded before helpers were hashed cannot see such a change (they go stale at their next update)"
    # a name imported inside a function: attn-flash-attn picks FlashAttention-4 or -3 when it applies
    flash = parse_stack("attn-flash-attn").components
    monkeypatch.undo()
    before = component_code(flash)
    monkeypatch.setattr(Path, "read_bytes", lambda path: read(path) + (b"#" if path.name == "flash_attn4.py" else b""))
    assert component_code(flash)["attn-flash-attn (helpers)"] != before["attn-flash-attn (helpers)"]
    # cuDNN's class shares attention.py with that one but never runs FA4: its references stay fresh
    monkeypatch.undo()
    cudnn = parse_stack("compile").components
    before = component_code(cudnn)
    monkeypatch.setattr(Path, "read_bytes", lambda path: read(path) + (b"#" if path.name == "flash_attn4.py" else b""))
    assert component_code(cudnn) == before


def test_cudnn_recorded_as_torchs_integer_is_the_same_version_dotted():
    recorded = now("fast")
    stored = {**recorded.to_json(), "software": {**recorded.software, "cudnn": "91900"}}
    as_integer = Provenance.from_json(stored)  # how an entry recorded before the dotted form reads
    assert as_integer.software["cudnn"] == "9.19.0" and stored["software"]["cudnn"] == "91900"
    dotted = replace(recorded, software={**recorded.software, "cudnn": "9.19.0"})
    assert stale_reasons(as_integer, dotted) == []
    newer = replace(recorded, software={**recorded.software, "cudnn": "9.20.1"})
    assert stale_reasons(as_integer, newer) == ["cudnn 9.19.0 -> 9.20.1"]


def test_a_reference_of_a_redefined_stack_or_older_method_says_so(store):
    entry = replace(latency(0.2, "fast"), stack="attn-cudnn+fp8-torchao", measurement_version=1)
    store.write_latency(KEY, "fast", entry, force=False)
    stale = references(store, "fast").stale["latency"]
    assert f"timed by measurement method 1, now {MEASUREMENT_VERSION}" in stale
    assert any("recorded for the components attn-cudnn+fp8-torchao, the stack is now" in r for r in stale)
    # The run's own command (its model, device and folder), not an option of one front end.
    key = parse_stack("fast").key
    assert f"the stack is now {key}: record it again on purpose with `{command('fast', SCENARIO.id)}`" in stale[-1]


def test_a_calibration_spread_measured_on_other_components_is_stale(store):
    calibration = CalibrationEntry(Band(0.999, 47.0, 6e-3), {"fast": Spread(0.0, 0.0, 1e-5)},
                                   {"fast": "attn-cudnn+fp8-torchao"}, now("fast"))
    store.write_calibration(KEY, calibration, force=False)
    refs = references(store, "fast")
    assert refs.calibration.band.ssim == 0.999 and refs.spread == Spread(0.0, 0.0, 1e-5)
    assert any("measured fast's spread on the components attn-cudnn+fp8-torchao" in r
               for r in refs.stale["calibration"])
    # Every spread the entry holds, as `calibrate --write` replaces it whole, with the run's options.
    again = f"calibrate again with `{command('compile,fast', SCENARIO.id, 'calibrate --write')}`"
    two = replace(calibration, spread={**calibration.spread, "compile": Spread()}, stacks={"compile": "x"})
    store.write_calibration(KEY, two, force=False)
    assert any(r.endswith(again) for r in references(store, "fast").stale["calibration"]), again


def test_updates_refused_under_ci_unless_forced(store, monkeypatch, image):
    monkeypatch.setenv("CI", "true")
    before = store.paths(KEY)[0].read_bytes()
    with pytest.raises(UpdateRefused, match="CI=true"):
        store.write_baseline(KEY, image[::-1].copy(), None, {}, force=False)
    with pytest.raises(UpdateRefused):
        store.write_latency(KEY, "bf16", latency(), force=False)
    assert store.paths(KEY)[0].read_bytes() == before, "a refused update must leave the file alone"
    store.write_baseline(KEY, image[::-1].copy(), None, {"scenario": SCENARIO.to_dict()}, force=True)
    assert np.array_equal(store.load_baseline(KEY, SCENARIO).image, image[::-1])


def test_nonsense_never_lands(store):
    with pytest.raises(BaselineCorrupt, match="median_s=nan"):
        store.write_latency(KEY, "bf16", latency(float("nan")), force=False)
    with pytest.raises(BaselineCorrupt, match="needs an ssim"):
        store.write_fidelity(KEY, "fast", FidelityEntry(2.0, None, None, None, "x", False, now()), None, force=False)


# -- issue 29: a broken file never loses entries, a bad value is one clear message ---------------------
@pytest.mark.parametrize("name, entry", [
    ("latency.json", lambda: latency(0.2, "fast")),
    ("fidelity.json", lambda: FidelityEntry(0.99, 40.0, None, None, "fast", False, now("fast"))),
    ("calibration.json", lambda: CalibrationEntry(Band(0.999), {}, {}, now())),
])
def test_a_corrupt_table_stops_the_update_and_keeps_every_entry(store, name, entry):
    """A trailing comma in latency.json made `baselines update --stacks bf16` rewrite the file with
    bf16 alone (`except BaselineCorrupt: table = {}`)."""
    other = BaselineKey(KEY.gpu_slug, KEY.fingerprint, "512x512@6")
    write = {"latency.json": lambda k, e: store.write_latency(k, "fast", e, force=False),
             "fidelity.json": lambda k, e: store.write_fidelity(k, "fast", e, None, force=False),
             "calibration.json": lambda k, e: store.write_calibration(k, e, force=False)}[name]
    write(other, entry())
    path = store.folder(KEY) / name
    broken = path.read_text().rstrip().removesuffix("}") + ",}"  # one stray comma
    path.write_text(broken)
    with pytest.raises(BaselineCorrupt, match=rf"{path} is not valid JSON: line \d+ column \d+: .*git checkout -- "):
        store.check_update(KEY.gpu_slug, KEY.fingerprint)
    with pytest.raises(BaselineCorrupt, match="is not valid JSON: line"):
        write(KEY, entry())
    assert path.read_text() == broken, "nothing rewritten, the other scenario's entry is still in the file"


def test_an_old_schema_table_stops_the_update_naming_the_migration(store):
    path = store.folder(KEY) / "latency.json"
    path.write_text('{"512x512@6": {"fast": {"median_s": 0.2}}}')
    with pytest.raises(SchemaError, match="flux-perf baselines migrate"):
        store.check_update(KEY.gpu_slug, KEY.fingerprint)
    with pytest.raises(SchemaError):
        store.write_latency(KEY, "bf16", latency(), force=False)
    assert "512x512@6" in path.read_text()


def test_an_unwritable_store_is_said_before_measuring_naming_the_folder(tmp_path, monkeypatch):
    """An update into a read-only folder failed after measuring, naming `.latency.json.tmp-PID`.
    (Tests run as root, which writes anywhere: a file where the GPU's folder belongs stands in.)"""
    monkeypatch.setenv("CI", "")  # as a user runs it: CI=true would refuse the write before trying it
    store = BaselineStore(tmp_path)
    (tmp_path / KEY.gpu_slug).write_text("not a folder")
    with pytest.raises(BaselineUnwritable) as caught:
        store.check_update(KEY.gpu_slug, KEY.fingerprint)
    folder = tmp_path / KEY.gpu_slug / KEY.fingerprint
    assert str(caught.value).startswith(f"baselines folder {folder} cannot be made: {tmp_path / KEY.gpu_slug} exists "
                                        "and is not a folder: nothing was measured")
    assert "nothing was measured" in str(caught.value) and "tmp" not in str(caught.value).replace(str(tmp_path), "")
    with pytest.raises(BaselineUnwritable, match=f"cannot write {folder / 'latency.json'}: ") as caught:
        store.write_latency(KEY, "bf16", latency(), force=False)
    assert ".tmp-" not in str(caught.value)


def _rehash_latents(store, data: bytes) -> None:
    """Latents whose sha256 the baseline's JSON names: the hash matches, the content is bad."""
    store.latents_path(KEY).write_bytes(data)
    meta = store.paths(KEY)[1]
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "latents_sha256": hashlib.sha256(data).hexdigest()}))


def _npy(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@pytest.mark.parametrize("data, message", [
    (_npy(np.ones((4, 8, 12), np.float32))[:-40], "cannot be read as an .npy array"),
    (_npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "cannot be read as an .npy array"),
    (pickle.dumps({"latents": [1.0]}), "cannot be read as an .npy array"),
    (_npy(np.full((4, 8, 12), np.nan, np.float32)), "hold NaN or infinite values"),
    (_npy(np.ones((4, 8, 12), np.int64)), "hold int64 of shape (4, 8, 12), not final latents"),
    (_npy(np.ones(7, np.float32)), "of shape (7,), not final latents"),
])
def test_bad_latents_are_a_problem_naming_the_file_and_the_fix(store, data, message):
    """Truncated, pickled, NaN or wrongly typed latents whose hash matches gave a bare ValueError or
    AttributeError naming no file."""
    _rehash_latents(store, data)
    refs = references(store)
    assert refs.baseline is None and "latency" in refs.problems, "only the baseline part is unusable"
    problem = refs.problems["baseline"]
    assert problem.startswith(f"latents {store.latents_path(KEY)} (baseline {KEY})") and message in problem
    assert "Re-record them with: flux-perf baselines update" in problem


def test_latents_of_another_shape_than_the_run_are_a_problem_naming_the_file(store):
    store.write_fidelity(KEY, "fused-qkv", FidelityEntry(0.999, 50.0, 0.0, None, "fused-qkv", True, now("fused-qkv")),
                         np.ones((4, 8, 12), np.float32), force=False)
    refs = references(store, "fused-qkv")
    assert check_latent_shapes(store, refs, np.ones((4, 8, 12)), command) is refs
    moved = check_latent_shapes(store, refs, np.ones((1, 16, 64)), command)
    assert moved.baseline is None and moved.own_latents is None
    assert moved.problems["baseline"] == (
        f"latents {store.latents_path(KEY)} are (4, 8, 12), this run's final latents (1, 16, 64): re-record them "
        "with: flux-perf baselines update --stacks bf16 --scenarios 64x96@2")
    assert f"latents {store.latents_path(KEY, 'fused-qkv')} are (4, 8, 12)" in moved.problems["fidelity"]


@pytest.mark.parametrize("name, entry, message", [
    ("fidelity.json", 5, "[64x96@2][fast] is a int, not an object"),
    ("fidelity.json", {"ssim": 0.99, "provenance": {"software": ["torch"]}},
     "[64x96@2][fast]: provenance.software=['torch'] is not an object of package -> version"),
    ("latency.json", {"median_s": 0.2, "samples_s": [0.2], "ci_low_s": "high"},
     "[64x96@2][fast]: ci_low_s='high' is not a positive number of seconds"),
    ("latency.json", {"median_s": float("nan")}, "[64x96@2][fast]: median_s=nan is not a positive number"),
    ("latency.json", {"median_s": 0.2, "provenance": {"recorded_at": "high"}},
     "[64x96@2][fast]: provenance.recorded_at='high' is not an ISO date"),
    ("latency.json", {"median_s": 0.2, "provenance": {"recorded_at": float("nan")}},
     "provenance.recorded_at=nan is not an ISO date"),
    ("latency.json", {"median_s": 0.2, "provenance": []}, "provenance=[] is not an object"),
    ("fidelity.json", {"ssim": 0.99, "lossless": "yes"}, "lossless='yes' is not true or false"),
    ("calibration.json", {"band": {"ssim": 0.999}, "stacks": ["fast"]}, "stacks=['fast'] is not an object"),
])
def test_wrongly_typed_entries_name_file_and_key(store, name, entry, message):
    path = store.folder(KEY) / name
    path.write_text(json.dumps({"flux_perf_store": 2, "entries": {"64x96@2": {"fast": entry}}}))
    with pytest.raises(BaselineCorrupt) as caught:
        store.table(KEY, name)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)
    assert "Re-record with: flux-perf baselines update" in str(caught.value)


def test_a_package_copied_into_another_checkout_names_no_commit_of_that_checkout(tmp_path):
    """An A/B's base unpacked into a folder of the head's checkout (as on the H100 device) named
    the head's commit: only a checkout whose root holds the package names its commit."""
    import shutil
    import subprocess
    import sys

    from flux_perf.store.provenance import PACKAGE_ROOT

    def git(*args, cwd):
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                       env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin"})

    def identity(root):
        code = "import json; from flux_perf.store.provenance import code_identity; print(json.dumps(code_identity()))"
        out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                             cwd=tmp_path, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    checkout = tmp_path / "checkout"
    shutil.copytree(PACKAGE_ROOT, checkout / "flux_perf", ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "-q", cwd=checkout)
    git("add", "-A", cwd=checkout)
    git("commit", "-qm", "x", cwd=checkout)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()
    assert identity(checkout)["commit"] == head
    nested = checkout / "parent"
    shutil.copytree(PACKAGE_ROOT, nested / "flux_perf", ignore=shutil.ignore_patterns("__pycache__"))
    inner = identity(nested)
    assert inner["commit"] is None and inner["uncommitted"] is None
    assert inner["source"] == identity(checkout)["source"], "the source hash still names the code"
