"""Store files that claim what the folder they lie in contradicts: `baselines migrate` rewriting
only store files and only at the level it names, a latency entry whose median its own rounds and
interval contradict, a bf16 baseline record (or a calibration) naming another GPU, model, stack or
scenario than the folder and case it is loaded for."""

import json
import shlex
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flux_perf.components.stacks import parse_stack
from flux_perf.instrument.measure import MEASUREMENT_VERSION
from flux_perf.model.scenarios import Scenario, parse_scenario
from flux_perf.store.baselines import TABLES, BaselineKey, BaselineMismatch, BaselineStore
from flux_perf.store.entries import Band, BaselineCorrupt, BaselineError, CalibrationEntry, FidelityEntry, LatencyEntry, SchemaError
from flux_perf.store.migrate import migrate_folder
from flux_perf.store.provenance import Provenance, component_code
from flux_perf.store.references import load_references

SCHEMA_1_LATENCY = {"64x96@2": {"cudnn": {"median_s": 0.3, "samples_s": [0.29, 0.3, 0.31], "stack": "attn-cudnn"}}}
RESULTS = {"flux_perf_results": 3, "machine": {}, "records": []}


def _folder(tmp_path):
    folder = tmp_path / "baselines" / "nvidia-h100-80gb-hbm3" / "synthetic-abc"
    folder.mkdir(parents=True)
    (folder / "latency.json").write_text(json.dumps(SCHEMA_1_LATENCY))
    return folder


def _contents(root):
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.json"))}


def test_migration_rewrites_only_store_files_and_names_the_others(tmp_path):
    """A copied results.json and a plain {"a": 1} both got flux_perf_store and a provenance."""
    folder = _folder(tmp_path)
    (folder / "results.json").write_text(json.dumps(RESULTS))
    (folder / "notes.json").write_text('{"a": 1}')
    lines = migrate_folder(folder)
    assert f"{folder / 'latency.json'}: schema 1 -> 2" in lines
    assert f"{folder / 'results.json'}: left alone (not a store file)" in lines
    assert f"{folder / 'notes.json'}: left alone (not a store file)" in lines
    assert json.loads((folder / "results.json").read_text()) == RESULTS
    assert (folder / "notes.json").read_text() == '{"a": 1}'
    assert json.loads((folder / "latency.json").read_text())["flux_perf_store"] == 2


def test_a_json_named_like_a_baseline_record_that_is_none_is_refused(tmp_path):
    folder = _folder(tmp_path)
    (folder / "64x96@2.json").write_text('{"a": 1}')
    before = _contents(tmp_path)
    with pytest.raises(SchemaError, match=r"64x96@2.json: named like a bf16 baseline record .* holds no "
                                          "image_sha256"):
        migrate_folder(folder)
    assert _contents(tmp_path) == before


@pytest.mark.parametrize("level", ["baselines", "baselines/nvidia-h100-80gb-hbm3"])
def test_migrate_of_a_folder_at_the_wrong_level_names_it_and_the_folders_below(tmp_path, cli, level):
    """`migrate baselines` and `migrate baselines/<gpu>` did nothing and exited 0."""
    folder = _folder(tmp_path)
    before = _contents(tmp_path)
    result = cli("baselines", "migrate", tmp_path / level)
    assert result.returncode == 2, result.stdout
    assert f"flux-perf: {tmp_path / level} holds no store file" in result.stderr
    assert "<baselines>/<gpu>/<model fingerprint>" in result.stderr
    assert f"these folders under it hold store files, pass them instead: {folder}" in result.stderr
    assert _contents(tmp_path) == before


def test_migrate_rewrites_no_folder_while_one_of_them_is_at_the_wrong_level(tmp_path, cli):
    folder = _folder(tmp_path)
    (tmp_path / "empty").mkdir()
    before = _contents(tmp_path)
    result = cli("baselines", "migrate", folder, tmp_path / "empty")
    assert result.returncode == 2 and f"{tmp_path / 'empty'} holds no store file" in result.stderr
    assert "these folders under it" not in result.stderr
    assert _contents(tmp_path) == before
    assert cli("baselines", "migrate", folder).returncode == 0
    assert json.loads((folder / "latency.json").read_text())["flux_perf_store"] == 2


# -- a latency reference that contradicts itself -----------------------------------------------------
COMMITTED = Path(__file__).resolve().parent.parent / "baselines"


@pytest.mark.parametrize("entry, message", [
    ({"median_s": 5.0, "samples_s": [0.49, 0.5, 0.51]}, "median_s=5.0 is not the median of its samples_s"),
    ({"median_s": 0.5, "samples_s": [0.49, 0.5, 0.51], "ci_low_s": 0.6, "ci_high_s": 0.7},
     "the interval ci_low_s=0.6 .. ci_high_s=0.7 does not hold median_s=0.5"),
    ({"median_s": 0.5, "ci_high_s": 0.4}, "ci_high_s=0.4 does not hold median_s=0.5"),
    ({"median_s": 0.5, "samples_s": []}, "samples_s=[] holds no round"),
    ({"median_s": 0.5, "samples_s": ""}, "samples_s must be a list"),
])
def test_a_latency_entry_that_contradicts_itself_is_refused_naming_the_file(entry, message):
    with pytest.raises(BaselineCorrupt) as caught:
        LatencyEntry.from_json({"provenance": {}, **entry}, "F [64x96@2][bf16]")
    assert str(caught.value).startswith("F [64x96@2][bf16]: ") and message in str(caught.value)
    assert "Re-record with: flux-perf baselines update" in str(caught.value)


def test_a_fidelity_entry_saying_identical_images_with_an_ssim_under_one_is_refused():
    with pytest.raises(BaselineCorrupt, match=r"^F: psnr null says the images are identical, but ssim is 0.98\."):
        FidelityEntry.from_json({"ssim": 0.98, "psnr": None, "provenance": {}}, "F")
    assert FidelityEntry.from_json({"ssim": 1.0, "psnr": None, "provenance": {}}, "F").psnr is None


def test_entries_that_agree_with_themselves_read_and_a_reference_without_rounds_round_trips():
    odd = LatencyEntry.from_json({"median_s": 0.5, "samples_s": [0.5, 0.49, 0.51], "ci_low_s": 0.49,
                                  "ci_high_s": 0.51}, "F")
    even = LatencyEntry.from_json({"median_s": 0.1 + 0.2, "samples_s": [0.2, 0.4]}, "F")  # 0.30000000000000004
    assert odd.median_s == 0.5 and even.samples_s == (0.2, 0.4)
    bare = LatencyEntry.from_json({"median_s": 0.48, "ci_low_s": 0.46, "ci_high_s": 0.51, "rounds": 5}, "F")
    assert bare.samples_s == () and "samples_s" not in bare.to_json()
    assert LatencyEntry.from_json(bare.to_json(), "F") == bare


def test_every_committed_store_file_still_reads(tmp_path, cli):
    """The committed references include entries recorded before the rounds were kept (no
    samples_s, a `rounds` count): they stay references, as does every other entry and record."""
    folders = sorted(p for p in COMMITTED.glob("*/*") if p.is_dir())
    assert folders
    store = BaselineStore(COMMITTED)
    for folder in folders:
        for name in TABLES:
            bad = [(s, n, e) for s, n, e in store.listing(folder, name) if isinstance(e, BaselineError)]
            assert not bad, bad
        for record in (p for p in folder.glob("*.json") if p.name not in TABLES):
            key = BaselineKey(folder.parent.name, folder.name, record.stem)
            assert store.load_baseline(key, parse_scenario(record.stem)).latents is not None
        latency = json.loads((folder / "latency.json").read_text())["entries"]
        assert any("samples_s" not in e for t in latency.values() for e in t.values()), "the old form is covered"
    shown = cli("baselines", "show", "--baselines-dir", COMMITTED)
    assert shown.returncode == 0 and "UNREADABLE" not in shown.stdout
    assert "latency.json 512x512@6 graphs: 0.477 s (its rounds not kept), recorded" in shown.stdout


# -- a file that names another GPU, model, stack or scenario than its folder and case ---------------
SCENARIO = Scenario(64, 96, 2)
KEY = BaselineKey("cpu-x86_64", "tiny-abc", SCENARIO.id)


def _references(store, key=KEY, scenario=SCENARIO):
    stack = parse_stack("bf16")
    return load_references(store, key, scenario, stack, Provenance.now(None, component_code(stack.components)),
                           measurement_version=MEASUREMENT_VERSION, record_command=lambda s, x, action="update": f"{action} {s} {x}")


def _baseline(tmp_path, monkeypatch, key=KEY, model="tiny", **edits):
    """A bf16 baseline as an update writes it, then its record edited (`scenario_*` edits the scenario)."""
    monkeypatch.delenv("CI", raising=False)
    store = BaselineStore(tmp_path)
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    record = {"scenario": SCENARIO.to_dict(), "stack": "bf16", "model": model, "gpu": {"name": None},
              "provenance": Provenance.now(None, {}).to_json()}
    store.write_baseline(key, image, np.ones((1, 24, 16), np.float32), record, force=False)
    meta = store.paths(key)[1]
    data = json.loads(meta.read_text())
    data["scenario"].update({k.removeprefix("scenario_"): v for k, v in edits.items() if k.startswith("scenario_")})
    data.update({k: v for k, v in edits.items() if not k.startswith("scenario_")})
    meta.write_text(json.dumps(data))
    return store, meta


def test_a_baseline_record_that_agrees_with_its_folder_loads(tmp_path, monkeypatch):
    store, _ = _baseline(tmp_path, monkeypatch)
    refs = _references(store)
    assert refs.baseline is not None and "baseline" not in refs.problems


@pytest.mark.parametrize("edits, message", [
    ({"gpu_slug": "nvidia-h100-80gb-hbm3", "stack": "fp8", "model": "synthetic"},  # the audit's edit
     "was made with gpu_slug='nvidia-h100-80gb-hbm3', its folder cpu-x86_64/tiny-abc expects gpu_slug='cpu-x86_64'"),
    ({"gpu": {"slug": "nvidia-h100-80gb-hbm3"}}, "was made with gpu.slug='nvidia-h100-80gb-hbm3', its folder "
                                                 "cpu-x86_64/tiny-abc expects gpu.slug='cpu-x86_64'"),
    ({"stack": "fp8"}, "was made with stack='fp8', its folder cpu-x86_64/tiny-abc expects stack='bf16'"),
    ({"model": "synthetic"}, "was made with model='synthetic', its folder cpu-x86_64/tiny-abc expects model='tiny'"),
    ({"model": "/models/FLUX.1-Kontext-dev"}, "model='/models/FLUX.1-Kontext-dev', its folder cpu-x86_64/tiny-abc "
                                              "expects model='tiny'"),
    ({"scenario_height": 128}, "was made with height=128, the scenario has height=64"),
    ({"scenario_id": "64x96@3"}, "was made with id=64x96@3, the scenario has id=64x96@2"),
])
def test_a_baseline_record_naming_another_gpu_model_stack_or_scenario_is_a_problem(tmp_path, monkeypatch, edits,
                                                                                     message):
    """Edited to say another GPU, stack and model, left in the cpu/tiny folder: trusted without note."""
    store, meta = _baseline(tmp_path, monkeypatch, **edits)
    with pytest.raises(BaselineMismatch) as caught:
        store.load_baseline(KEY, SCENARIO)
    assert str(caught.value).startswith(f"baseline {meta} ") and message in str(caught.value)
    refs = _references(store)
    assert refs.baseline is None and message in refs.problems["baseline"]


@pytest.mark.parametrize("model, fine", [("/models/FLUX.1-Kontext-dev", True), ("owner/name", True),
                                         ("tiny", False), ("synthetic", False)])
def test_a_checkpoints_folder_takes_a_checkpoints_label(tmp_path, monkeypatch, model, fine):
    key = BaselineKey("nvidia-h100-80gb-hbm3", "pretrained-abc", SCENARIO.id)
    store, _ = _baseline(tmp_path, monkeypatch, key=key, model=model, gpu_slug=key.gpu_slug)
    refs = _references(store, key)
    if fine:
        assert refs.baseline is not None, refs.problems
    else:
        assert f"model='{model}', its folder nvidia-h100-80gb-hbm3/pretrained-abc expects model=\"a checkpoint's " \
               "folder or hub id\"" in refs.problems["baseline"]


def test_a_calibration_measured_against_another_folders_baseline_is_a_problem(tmp_path, monkeypatch, cli):
    store, _ = _baseline(tmp_path, monkeypatch)
    elsewhere = "stored baseline nvidia-h100-80gb-hbm3/synthetic-d3fe4e48a811/512x512@6"
    entry = CalibrationEntry(Band(0.999), {}, {}, Provenance.now(None, {}), {"reference": elsewhere})
    store.write_calibration(KEY, entry, force=False)
    refs = _references(store)
    path = store.folder(KEY) / "calibration.json"
    assert refs.calibration is None and refs.problems["calibration"].startswith(
        f"{path} [64x96@2][fidelity]: reference='{elsewhere}', this entry lies at 'cpu-x86_64/tiny-abc/64x96@2'")
    # the run's own command (here the test's stand-in), never the bare one into the checkout's folder
    assert refs.problems["calibration"].endswith("Calibrate again with: calibrate --write  64x96@2")
    shown = cli("baselines", "show", "--baselines-dir", tmp_path)
    assert shown.returncode == 1 and "calibration.json 64x96@2 fidelity: UNREADABLE (" in shown.stdout
    for reference in (f"stored baseline {KEY}", "fresh bf16 output"):
        store.write_calibration(KEY, replace(entry, details={"reference": reference}), force=False)
        assert _references(store).calibration is not None


def test_baselines_show_names_the_calibrate_command_for_the_folder_it_read(tmp_path, monkeypatch, cli):
    """`baselines show --baselines-dir DIR` listed a broken calibration with a bare `flux-perf
    calibrate --write`: the default scenarios, into the checkout's baselines/, not DIR's entry."""
    store, _ = _baseline(tmp_path, monkeypatch)
    elsewhere = "stored baseline nvidia-h100-80gb-hbm3/synthetic-d3fe4e48a811/512x512@6"
    store.write_calibration(KEY, CalibrationEntry(Band(0.999), {}, {}, Provenance.now(None, {}),
                                                  {"reference": elsewhere}), force=False)
    shown = cli("baselines", "show", "--baselines-dir", tmp_path)
    line = next(line for line in shown.stdout.splitlines() if "calibration.json 64x96@2 fidelity: UNREADABLE" in line)
    again = shlex.join(["flux-perf", "calibrate", "--write", "--scenarios", "64x96@2", "--baselines-dir", str(tmp_path)])
    assert shown.returncode == 1 and line.endswith(f"Calibrate again with: {again})"), line
    path = store.folder(KEY) / "calibration.json"
    data = json.loads(path.read_text())
    del data["entries"][SCENARIO.id]["fidelity"]["band"]
    path.write_text(json.dumps(data))
    shown = cli("baselines", "show", "--baselines-dir", tmp_path)
    assert f"needs a `band` object with an SSIM; re-run {again})" in shown.stdout, shown.stdout


# -- a folder copied from another GPU model or weights (outside-in audit of misplaced baselines) -----
def _pcie(fingerprint="tiny-abc"):
    return BaselineKey("nvidia-h100-pcie", fingerprint, SCENARIO.id, gpu_name="NVIDIA H100 PCIe")


def _latency(stack="bf16"):
    return LatencyEntry(0.5, (0.49, 0.5, 0.51), stack, Provenance.now(None, {}))


def _recorded_on_pcie_and_copied(tmp_path, monkeypatch, to=KEY, stamped=True):
    """bf16 and fused-qkv recorded on an H100 PCIe, the folder then copied to `to`'s (`cp -r`):
    `stamped` False strips what the entries say of their place, as entries recorded before did."""
    pcie = _pcie()
    store, _ = _baseline(tmp_path, monkeypatch, key=pcie, gpu={"name": pcie.gpu_name, "slug": pcie.gpu_slug})
    for stack in ("bf16", "fused-qkv"):
        store.write_latency(pcie, stack, _latency(stack), force=False)
    store.write_fidelity(pcie, "fused-qkv", FidelityEntry(0.99, 40.0, None, None, "fused-qkv", True,
                                                          Provenance.now(None, {})), None, force=False)
    store.write_calibration(pcie, CalibrationEntry(Band(0.999), {}, {}, Provenance.now(None, {})), force=False)
    store.folder(to).parent.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.copytree(store.folder(pcie), store.folder(to))
    for name in TABLES if not stamped else ():
        path = store.folder(to) / name
        data = json.loads(path.read_text())
        for entries in data["entries"].values():
            for entry in entries.values():
                for stamp in ("gpu", "gpu_slug", "fingerprint"):
                    entry.pop(stamp, None)  # absent where the code did not stamp them
        path.write_text(json.dumps(data))
    return store


@pytest.mark.parametrize("stamped", [True, False], ids=["stamped", "recorded-before-stamps"])
def test_references_of_another_gpu_copied_into_this_machines_folder_are_never_judged(tmp_path, monkeypatch, cli,
                                                                                     stamped):
    """latency.json, fidelity.json and calibration.json named no GPU: copied under this machine's
    slug, their entries were read as this card's (the bf16 record beside them was the only one refused)."""
    store = _recorded_on_pcie_and_copied(tmp_path, monkeypatch, stamped=stamped)
    stack = parse_stack("fused-qkv")
    refs = load_references(store, KEY, SCENARIO, stack, Provenance.now(None, component_code(stack.components)),
                           measurement_version=MEASUREMENT_VERSION, record_command=lambda s, x: f"update {s} {x}")
    assert refs.latency is None and refs.fidelity is None and refs.calibration is None
    latency = store.folder(KEY) / "latency.json"
    for part in ("latency", "fidelity", "calibration"):
        problem = refs.problems[part]
        if stamped:
            assert problem.startswith(f"{store.folder(KEY) / (part + '.json')} [64x96@2]["), problem
            assert "recorded on GPU 'NVIDIA H100 PCIe' (nvidia-h100-pcie) with weights tiny-abc, read for GPU " \
                   "cpu-x86_64 with weights tiny-abc (folder cpu-x86_64/tiny-abc)" in problem, problem
        else:
            assert problem.startswith(f"{store.folder(KEY) / (part + '.json')} [64x96@2]: its entries name no GPU")
            assert "the bf16 baseline beside them (64x96@2.json) was recorded on GPU 'NVIDIA H100 PCIe' " \
                   "(nvidia-h100-pcie) with weights tiny-abc, not GPU cpu-x86_64 with weights tiny-abc" in problem
        assert problem.endswith("Record this machine's own with: update fused-qkv 64x96@2"), problem
    shown = cli("baselines", "show", "--baselines-dir", tmp_path)
    assert shown.returncode == 1 and f"latency.json 64x96@2 fused-qkv: UNREADABLE ({latency} [64x96@2]" in shown.stdout
    assert "nvidia-h100-pcie/tiny-abc:" in shown.stdout and shown.stdout.count("UNREADABLE") == 4, shown.stdout


def test_references_of_other_weights_copied_under_this_fingerprint_are_never_judged(tmp_path, monkeypatch):
    other = _pcie("tiny-def")
    store = _recorded_on_pcie_and_copied(tmp_path, monkeypatch, to=other)
    refs = load_references(store, other, SCENARIO, parse_stack("bf16"), Provenance.now(None, {}),
                           measurement_version=MEASUREMENT_VERSION, record_command=lambda s, x: f"update {s} {x}")
    assert refs.latency is None and "with weights tiny-abc, read for GPU 'NVIDIA H100 PCIe' (nvidia-h100-pcie) " \
                                     "with weights tiny-def" in refs.problems["latency"]


def test_a_copied_folders_old_entries_stay_refused_once_its_bf16_baseline_is_recorded_here(tmp_path, monkeypatch):
    """Following the bf16 case's command replaces the copied bf16 record: the other stacks' entries
    recorded before entries named their place, copied with it, must not read as this card's then."""
    store = _recorded_on_pcie_and_copied(tmp_path, monkeypatch, stamped=False)
    image = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    record = {"scenario": SCENARIO.to_dict(), "stack": "bf16", "model": "tiny", "gpu": {"name": None}}
    store.write_baseline(KEY, image, None, record, force=False)
    store.write_latency(KEY, "bf16", _latency(), force=False)
    assert json.loads(store.paths(KEY)[1].read_text())["replaced_copy"]["gpu_slug"] == "nvidia-h100-pcie"
    assert _references(store).latency is not None, "recorded here, and says so"
    stack = parse_stack("fused-qkv")
    refs = load_references(store, KEY, SCENARIO, stack, Provenance.now(None, component_code(stack.components)),
                           measurement_version=MEASUREMENT_VERSION, record_command=lambda s, x: f"update {s} {x}")
    assert refs.latency is None and "the bf16 baseline beside them (64x96@2.json) replaced one recorded on GPU " \
                                    "'NVIDIA H100 PCIe' (nvidia-h100-pcie)" in refs.problems["latency"]
    store.write_latency(KEY, "fused-qkv", _latency("fused-qkv"), force=False)
    store.write_baseline(KEY, image, None, record, force=False)  # recorded again: the copy is still remembered
    assert "replaced_copy" in json.loads(store.paths(KEY)[1].read_text())
    assert load_references(store, KEY, SCENARIO, stack, Provenance.now(None, {}), measurement_version=MEASUREMENT_VERSION,
                           record_command=lambda s, x: "").latency is not None


# -- one case's references read each stored file once --------------------------------------------
def test_a_case_reads_each_stored_file_once(tmp_path, monkeypatch):
    """Since table entries are judged by the bf16 record beside them, each table read the record
    again: a case read its 64x96@2.json four times (the image's, and latency, fidelity and
    calibration's placement checks)."""
    store, _ = _baseline(tmp_path, monkeypatch, gpu_slug=KEY.gpu_slug, fingerprint=KEY.fingerprint)
    provenance = Provenance.now(None, {})
    store.write_latency(KEY, "fused-qkv", LatencyEntry(0.5, (0.49, 0.5, 0.51), "fused-qkv", provenance), force=False)
    store.write_fidelity(KEY, "fused-qkv", FidelityEntry(0.99, 40.0, None, None, "fused-qkv", True, provenance),
                         np.ones((1, 24, 16), np.float32), force=False)
    store.write_calibration(KEY, CalibrationEntry(Band(0.999), {}, {}, provenance), force=False)
    reads: list[Path] = []
    for name in ("read_text", "read_bytes"):  # every store read goes through one of the two
        def counted(path, *args, _read=getattr(Path, name), **kwargs):
            if tmp_path in path.parents:  # the store's, not the code hashed for staleness
                reads.append(path)
            return _read(path, *args, **kwargs)
        monkeypatch.setattr(Path, name, counted)
    stack = parse_stack("fused-qkv")
    refs = load_references(store, KEY, SCENARIO, stack, Provenance.now(None, component_code(stack.components)),
                           measurement_version=MEASUREMENT_VERSION, record_command=lambda *words: " ".join(words))
    assert not refs.problems and None not in (refs.baseline, refs.latency, refs.fidelity, refs.calibration)
    names = ["64x96@2.json", "64x96@2.png", "64x96@2.latents.npy", "64x96@2.fused-qkv.latents.npy", *TABLES]
    assert all(p.parent == store.folder(KEY) for p in reads)
    assert Counter(p.name for p in reads) == dict.fromkeys(names, 1)
