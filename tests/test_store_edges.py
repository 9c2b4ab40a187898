"""Store files that claim what the folder they lie in contradicts: `baselines migrate` rewriting
only store files and only at the level it names, a latency entry whose median its own rounds and
interval contradict, a bf16 baseline record (or a calibration) naming another GPU, model, stack or
scenario than the folder and case it is loaded for."""

import json

import pytest

from flux_perf.store.entries import BaselineError, SchemaError
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
