import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from flux_perf.model import models
from flux_perf.model.models import FULL, ModelSource, ModelSourceError, resolve_model_source
from flux_perf.model.synthetic_weights import build_on_device


def test_defaults_by_device(monkeypatch):
    monkeypatch.delenv("FLUX_PERF_MODEL", raising=False)
    assert resolve_model_source(None, "cuda").kind == "synthetic"
    assert resolve_model_source(None, "cpu").kind == "tiny"
    monkeypatch.setenv("FLUX_PERF_MODEL", "tiny")
    assert resolve_model_source(None, "cuda").kind == "tiny"


def test_fingerprints_separate_weights():
    assert ModelSource("synthetic").fingerprint() == ModelSource("synthetic").fingerprint()
    assert ModelSource("synthetic").fingerprint() != ModelSource("synthetic", seed=1).fingerprint()
    assert ModelSource("synthetic").fingerprint() != ModelSource("tiny").fingerprint()


def test_full_architecture_is_kontext_dev():
    from diffusers import FluxTransformer2DModel

    assert FULL.transformer["guidance_embeds"] is True
    with torch.device("meta"):
        model = FluxTransformer2DModel(**FULL.transformer)
    assert sum(p.numel() for p in model.parameters()) == 11_901_408_320


def test_unknown_model_names_the_value(tmp_path):
    with pytest.raises(ModelSourceError, match="unknown model 'nonsense'"):
        resolve_model_source("nonsense", "cpu")
    with pytest.raises(ModelSourceError, match="no model_index.json"):
        resolve_model_source(str(tmp_path), "cpu")


def test_hub_id_is_pretrained_without_downloading():
    source = resolve_model_source("hub:black-forest-labs/FLUX.1-Kontext-dev", "cpu")
    assert source.kind == "pretrained" and source.location == "black-forest-labs/FLUX.1-Kontext-dev"
    assert source.is_hub and source.fingerprint().startswith("pretrained-")


def test_mistyped_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("nonexistent/dir", "black-forest-labs/FLUX.1-Kontext-dev"):
        with pytest.raises(ModelSourceError) as error:
            resolve_model_source(text, "cpu")
        message = str(error.value)
        assert f"{text!r}" in message and "neither" in message and "hub:owner/name" in message
        assert f"resolved to {tmp_path.resolve() / text}" in message


def test_malformed_hub_id_names_the_value():
    with pytest.raises(ModelSourceError, match="'hub:nonsense' is not of the form hub:owner/name"):
        resolve_model_source("hub:nonsense", "cpu")


@pytest.mark.parametrize("content, problem", [
    ("{}", "has no '_class_name'"),
    ('{"transformer": ["diffusers", "FluxTransformer2DModel"]}', "has no '_class_name'"),
    ("not json at all", "is not valid JSON"),
    ("[1, 2]", "holds a JSON list"),
])
def test_broken_model_index_names_the_file(tmp_path, content, problem):
    index = tmp_path / "model_index.json"
    index.write_text(content)
    with pytest.raises(ModelSourceError) as error:
        resolve_model_source(str(tmp_path), "cpu")
    assert str(index.resolve()) in str(error.value) and problem in str(error.value)


def _kontext_index(folder: Path) -> None:
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxKontextPipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }))


def test_only_a_hub_id_may_download_and_no_token_is_passed(tmp_path, monkeypatch):
    from diffusers import FluxKontextPipeline

    from flux_perf.model.pipeline import build_pipeline

    calls = []

    def fake_from_pretrained(location, **kwargs):
        calls.append((location, kwargs))
        raise LookupError("stop here")

    monkeypatch.setattr(FluxKontextPipeline, "from_pretrained", fake_from_pretrained)
    _kontext_index(tmp_path)
    hub = {"unreachable": None, "cached": False}  # this machine, as the hub checks would see it
    monkeypatch.setattr(models, "hub_unreachable", lambda: hub["unreachable"])
    monkeypatch.setattr(models, "hub_cached", lambda repo: hub["cached"])
    for text in (str(tmp_path), "hub:black-forest-labs/FLUX.1-Kontext-dev"):
        with pytest.raises(ModelSourceError, match="LookupError: stop here"):
            build_pipeline(resolve_model_source(text, "cpu"), "cpu", torch.float32)
    (local, local_kwargs), (hub_id, hub_kwargs) = calls
    assert local == str(tmp_path.resolve()) and local_kwargs["local_files_only"] is True
    assert hub_id == "black-forest-labs/FLUX.1-Kontext-dev" and hub_kwargs["local_files_only"] is False
    # huggingface_hub reads HF_TOKEN itself; passed on, it would show in tracebacks.
    assert "token" not in local_kwargs and "token" not in hub_kwargs
    # No hub here: a cached copy loads without any request; none cached fails before from_pretrained.
    hub.update(unreachable="the hub's host huggingface.co does not resolve", cached=True)
    with pytest.raises(ModelSourceError, match="LookupError: stop here"):
        build_pipeline(resolve_model_source("hub:black-forest-labs/FLUX.1-Kontext-dev", "cpu"), "cpu", torch.float32)
    assert calls[-1][1]["local_files_only"] is True
    hub["cached"] = False
    with pytest.raises(ModelSourceError, match="does not resolve and it is not in the local hub cache"):
        build_pipeline(resolve_model_source("hub:black-forest-labs/FLUX.1-Kontext-dev", "cpu"), "cpu", torch.float32)
    assert len(calls) == 3


def test_hf_token_is_not_in_a_long_traceback(tmp_path):
    """pytest --tb=long -l prints every frame's arguments and locals: the token must be in none."""
    model_dir = tmp_path / "broken-model"
    model_dir.mkdir()
    _kontext_index(model_dir)  # lists components whose folders are missing: loading fails
    (tmp_path / "test_load_broken.py").write_text(textwrap.dedent(f"""
        from flux_perf.model.models import resolve_model_source
        from flux_perf.model.pipeline import load_model

        def test_load():
            load_model(resolve_model_source({str(model_dir)!r}, "cpu"), "cpu")
    """))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_TOKEN": "hf_SECRET123",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    # The suite's own plugin plays no part in this traceback: leave it out, so only the loading code is judged.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "test_load_broken.py", "--tb=long", "-l",
         "-p", "no:cacheprovider", "-p", "no:flux_perf.plugin"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert "1 failed" in output, output[-3000:]  # the load really failed and printed its traceback
    assert "hf_SECRET123" not in output


def test_weights_do_not_depend_on_build_order():
    from diffusers import AutoencoderKL

    from flux_perf.model.models import TINY

    first = build_on_device(AutoencoderKL, TINY.vae, 0, "vae", "cpu", torch.float32)
    torch.manual_seed(123)  # global RNG state must not matter
    second = build_on_device(AutoencoderKL, TINY.vae, 0, "vae", "cpu", torch.float32)
    other_seed = build_on_device(AutoencoderKL, TINY.vae, 1, "vae", "cpu", torch.float32)
    for (name, a), (_, b), (_, c) in zip(first.state_dict().items(), second.state_dict().items(),
                                         other_seed.state_dict().items()):
        assert torch.equal(a, b), name
        if "norm" not in name:
            assert not torch.equal(a, c), name


def test_pretrained_fingerprint_follows_content(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxKontextPipeline"}))
    first = resolve_model_source(str(tmp_path), "cpu").fingerprint()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxKontextPipeline", "x": 1}))
    assert resolve_model_source(str(tmp_path), "cpu").fingerprint() != first


def test_a_resolver_that_never_answers_is_unreachable_not_a_hang(monkeypatch):
    """getaddrinfo has no timeout: a hung resolver must not hang the run's start."""
    import threading

    from flux_perf.model import models

    release = threading.Event()
    monkeypatch.setattr(models.socket, "getaddrinfo", lambda *args: release.wait())  # blocks until released
    monkeypatch.setattr(models, "HUB_RESOLVE_TIMEOUT_S", 0.05)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    try:
        reason = models.hub_unreachable()
    finally:
        release.set()
    assert reason is not None and "did not resolve within 0.05 s" in reason
    monkeypatch.setattr(models.socket, "getaddrinfo", lambda *args: [])
    assert models.hub_unreachable() is None


def test_full_size_weights_larger_than_free_host_memory_are_refused_before_allocating(monkeypatch):
    # Unchecked, the kernel's OOM killer ended `flux-perf run --model synthetic --device cpu` with no message.
    from diffusers import FluxTransformer2DModel

    from flux_perf.model import synthetic_weights
    from flux_perf.model.models import TINY

    monkeypatch.setattr(synthetic_weights, "available_host_bytes", lambda: 8 * 2**30)
    with pytest.raises(MemoryError, match=r"transformer's weights need 2\d\.\d GiB in torch.bfloat16 on the CPU "
                                          r"and 8.0 GiB of memory is free: on a CPU use --model tiny"):
        build_on_device(FluxTransformer2DModel, FULL.transformer, 0, "transformer", "cpu", torch.bfloat16)
    tiny = build_on_device(FluxTransformer2DModel, TINY.transformer, 0, "transformer", "cpu", torch.bfloat16)
    assert sum(p.numel() for p in tiny.parameters()) > 0, "a model that fits is built as before"
