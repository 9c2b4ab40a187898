"""The real pipeline code path end to end on the tiny model (CPU, fp32)."""

import numpy as np
import pytest
import torch

from flux_perf.model.generate import generate, generate_with
from flux_perf.model.inputs import reference_image
from flux_perf.model.models import resolve_model_source
from flux_perf.model.pipeline import DeviceError, load_model
from flux_perf.model.scenarios import Scenario


@pytest.mark.parametrize("scenario", [Scenario(64, 64, 2), Scenario(96, 128, 3)], ids=lambda s: s.id)
def test_generation_honours_the_resolution(tiny_model, scenario):
    result = generate_with(tiny_model, scenario)
    assert result.image.shape == (scenario.height, scenario.width, 3)
    assert result.image.dtype == np.uint8
    assert result.image.std() > 1.0, "a flat image means the pipeline did not really run"
    times = result.times
    assert len(times.step_ms) == scenario.steps
    assert all(t > 0 for t in (times.encode_ms, times.decode_ms, *times.step_ms))
    assert times.total_ms <= times.wall_ms * 1.05


def test_same_seed_same_image_other_seed_other_image(tiny_model):
    first = generate_with(tiny_model, Scenario(64, 64, 2)).image
    again = generate_with(tiny_model, Scenario(64, 64, 2)).image
    other = generate_with(tiny_model, Scenario(64, 64, 2, seed=1)).image
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_rebuilt_model_gives_the_same_image(tiny_source, tiny_model):
    rebuilt = load_model(tiny_source, "cpu")
    assert np.array_equal(generate_with(tiny_model, Scenario(64, 64, 2)).image,
                          generate_with(rebuilt, Scenario(64, 64, 2)).image)


def test_reference_image_is_a_real_photo_at_the_asked_size():
    image = reference_image(96, 160)
    assert image.shape == (96, 160, 3) and image.dtype == np.uint8
    assert image.std() > 20  # a photograph, not a constant


def test_save_load_round_trip(tiny_model, tmp_path):
    """The real-weights path (from_pretrained), on tiny weights saved by save_pretrained."""
    tiny_model.pipe.save_pretrained(tmp_path)
    source = resolve_model_source(str(tmp_path), "cpu")
    assert source.kind == "pretrained"
    loaded = load_model(source, "cpu")
    for (name, a), (_, b) in zip(tiny_model.pipe.transformer.state_dict().items(),
                                 loaded.pipe.transformer.state_dict().items()):
        assert torch.equal(a, b), name
    scenario = Scenario(64, 64, 2)
    embeds = (tiny_model.prompt.prompt_embeds, tiny_model.prompt.pooled_prompt_embeds)
    original = generate(tiny_model.pipe, scenario, *embeds, device="cpu").image
    reloaded = generate(loaded.pipe, scenario, *embeds, device="cpu").image
    assert np.array_equal(original, reloaded)
    assert loaded.fingerprint.startswith("pretrained-") and loaded.fingerprint != tiny_model.fingerprint


def test_missing_gpu_is_a_clear_error(tiny_source, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        load_model(tiny_source, "cuda")
