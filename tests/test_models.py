import json

import pytest
import torch

from flux_perf.models import FULL, ModelSource, ModelSourceError, resolve_model_source
from flux_perf.synthetic_weights import build_on_device


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
    source = resolve_model_source("black-forest-labs/FLUX.1-Kontext-dev", "cpu")
    assert source.kind == "pretrained" and source.location == "black-forest-labs/FLUX.1-Kontext-dev"


def test_weights_do_not_depend_on_build_order():
    from diffusers import AutoencoderKL

    from flux_perf.models import TINY

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
