"""Store files that claim what the folder they lie in contradicts: `baselines migrate` rewriting
only store files and only at the level it names, a latency entry whose median its own rounds and
interval contradict, a bf16 baseline record (or a calibration) naming another GPU, model, stack or
scenario than the folder and case it is loaded for."""

import json
from pathlib import Path

import pytest

from flux_perf.store.baselines import TABLES, BaselineStore
from flux_perf.store.entries import BaselineCorrupt, BaselineError, LatencyEntry, SchemaError
from flux_perf.store.migrate import migrate_folder

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
        latency = json.loads((folder / "latency.json").read_text())["entries"]
        assert any("samples_s" not in e for t in latency.values() for e in t.values()), "the old form is covered"
    shown = cli("baselines", "show", "--baselines-dir", COMMITTED)
    assert shown.returncode == 0 and "UNREADABLE" not in shown.stdout
    assert "latency.json 512x512@6 graphs: 0.477 s (its rounds not kept), recorded" in shown.stdout
