"""The checkpoint maker: a tiny FLUX.1-Kontext-dev-layout folder, loaded through the suite's real path."""

import json

import pytest
import torch

from flux_perf.model.checkpoint import CLIP_FULL, SIZES, T5_FULL, estimate_bytes, main
from flux_perf.model.prompt_tokens import PromptTokensError
from flux_perf.model.generate import generate_with
from flux_perf.model.inputs import DEFAULT_PROMPT
from flux_perf.instrument.measure import MeasureSettings
from flux_perf.model.models import FLUX_SCHEDULER, FULL, TINY, resolve_model_source
from flux_perf.model.pipeline import load_model
from flux_perf.instrument.runner import CaseRunner
from flux_perf.model.scenarios import Scenario
from flux_perf.components.stacks import parse_stack
from flux_perf.model.synthetic_weights import build_on_device

TINY_ARGS = ["--size", "tiny", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("sentencepiece", reason="the T5 tokenizer is trained with sentencepiece")
    out = tmp_path_factory.mktemp("checkpoint") / "kontext-tiny"
    # Shards small enough to split the tiny transformer, as 5GB splits the full one.
    assert main([str(out), *TINY_ARGS, "--shard-size", "200KB"]) == 0
    return out


def test_text_encoders_fit_the_transformer():
    for size in SIZES.values():
        assert size.t5["d_model"] == size.arch.transformer["joint_attention_dim"]
        assert size.clip["hidden_size"] == size.arch.transformer["pooled_projection_dim"]
    assert SIZES["full"].arch is FULL and SIZES["tiny"].arch is TINY
    assert (CLIP_FULL["hidden_size"], CLIP_FULL["num_hidden_layers"], CLIP_FULL["num_attention_heads"],
            CLIP_FULL["intermediate_size"], CLIP_FULL["max_position_embeddings"]) == (768, 12, 12, 3072, 77)
    assert (T5_FULL["d_model"], T5_FULL["d_ff"], T5_FULL["num_layers"], T5_FULL["num_heads"],
            T5_FULL["vocab_size"]) == (4096, 10240, 24, 64, 32128)


def test_full_size_is_the_real_parameter_count():
    # transformer 11,901,408,320 + T5-XXL encoder 4,762,310,656 + CLIP-L text 123,060,480 + VAE, in bf16
    assert 33.6e9 < estimate_bytes(SIZES["full"]) < 33.9e9


def test_layout_is_flux_kontext_dev(tiny_checkpoint):
    index = json.loads((tiny_checkpoint / "model_index.json").read_text())
    assert index["_class_name"] == "FluxKontextPipeline"
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert index[part][0] in ("diffusers", "transformers") and (tiny_checkpoint / part).is_dir(), part
    transformer = tiny_checkpoint / "transformer"
    assert (transformer / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert len(list(transformer.glob("*.safetensors"))) > 1
    assert (tiny_checkpoint / "tokenizer" / "vocab.json").is_file()
    assert (tiny_checkpoint / "tokenizer" / "merges.txt").is_file()
    scheduler = json.loads((tiny_checkpoint / "scheduler" / "scheduler_config.json").read_text())
    assert {k: scheduler[k] for k in FLUX_SCHEDULER} == FLUX_SCHEDULER


def test_token_ids_fit_the_encoders(tiny_checkpoint):
    from transformers import CLIPTokenizer, T5TokenizerFast

    clip = CLIPTokenizer.from_pretrained(tiny_checkpoint / "tokenizer")
    t5 = T5TokenizerFast.from_pretrained(tiny_checkpoint / "tokenizer_2")
    clip_ids = clip(DEFAULT_PROMPT, padding="max_length", max_length=77, truncation=True).input_ids
    t5_ids = t5(DEFAULT_PROMPT, padding="max_length", max_length=512, truncation=True).input_ids
    assert len(clip_ids) == 77 and clip_ids[0] == clip.bos_token_id and clip.eos_token_id in clip_ids
    assert max(clip_ids) < CLIP_FULL["vocab_size"] and 700 < len(clip) < 1200
    assert len(t5_ids) == 512 and max(t5_ids) < T5_FULL["vocab_size"] and 1000 <= len(t5) < 1200
    assert t5_ids.count(t5.unk_token_id) < 5, "the made-up vocabulary should still split English"


def test_loads_encodes_and_generates_through_the_suite(tiny_checkpoint):
    source = resolve_model_source(str(tiny_checkpoint), "cpu")
    model = load_model(source, "cpu")
    assert model.prompt.source == "text-encoders"
    assert model.prompt.prompt_embeds.shape == (1, 512, TINY.transformer["joint_attention_dim"])
    assert model.prompt.pooled_prompt_embeds.shape == (1, TINY.transformer["pooled_projection_dim"])
    assert model.build_s > 0 and model.encode_prompt_s > 0
    assert model.text_encoders_released and model.pipe.text_encoder is None and model.pipe.text_encoder_2 is None
    # The transformer is the suite's synthetic one, bit for bit.
    synthetic = build_on_device(type(model.pipe.transformer), TINY.transformer, 0, "transformer", "cpu",
                                torch.float32)
    for (name, a), (_, b) in zip(synthetic.state_dict().items(), model.pipe.transformer.state_dict().items()):
        assert torch.equal(a, b), name
    result = generate_with(model, Scenario(64, 64, 2))
    assert result.image.shape == (64, 64, 3) and result.image.std() > 1.0


def test_a_second_build_reuses_the_prompt_and_reports_the_first_encoding_time(tiny_checkpoint):
    from flux_perf.model.inputs import PromptCache

    source, prompts = resolve_model_source(str(tiny_checkpoint), "cpu"), PromptCache()
    first = load_model(source, "cpu", prompts=prompts)
    second = load_model(source, "cpu", prompts=prompts)
    assert not first.prompt_reused and second.prompt_reused
    assert not load_model(source, "cpu").prompt_reused  # no cache given: nothing kept from another build
    # The H100 run reported 0.0002 s for a reused T5-XXL encoding: the cache lookup, not the encoders.
    assert first.encode_prompt_s > 0 and second.encode_prompt_s == first.encode_prompt_s
    assert torch.equal(first.prompt.prompt_embeds, second.prompt.prompt_embeds)


def test_refuses_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main([str(tmp_path), *TINY_ARGS]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path) in error and "not empty" in error and "--force" in error
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_force_replaces_only_the_checkpoint_parts(tmp_path):
    pytest.importorskip("sentencepiece", reason="the T5 tokenizer is trained with sentencepiece")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "diffusion_pytorch_model-00001-of-00009.safetensors").write_text("stale")
    assert main([str(tmp_path), *TINY_ARGS, "--force"]) == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert [p.name for p in (tmp_path / "transformer").glob("*.safetensors")] == [
        "diffusion_pytorch_model.safetensors"]
    assert (tmp_path / "model_index.json").is_file()


def test_bad_shard_size_names_the_value(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), *TINY_ARGS, "--shard-size", "5 gigs"])
    assert "'5 gigs'" in capsys.readouterr().err


def test_run_reports_load_and_prompt_encoding(tiny_checkpoint, tmp_path):
    """What a user of real weights wants to see: load time, encoding time, encoders released."""
    lines = []
    runner = CaseRunner(resolve_model_source(str(tiny_checkpoint), "cpu"), "cpu", log=lines.append)
    settings = MeasureSettings(rounds=1, max_rounds=1, max_warmup=1)
    measured = runner.measure(parse_stack("bf16"), Scenario(64, 64, 2), settings)
    assert measured.build_s > 0 and measured.encode_prompt_s > 0
    assert any("prompt encoded in" in line and "text encoders released" in line for line in lines), lines


def test_text_tokens_encode_the_prompt_to_its_own_length(tiny_checkpoint):
    """`text-tokens`: the real encoders on the prompt's own length, rounded up to 256; a length
    that would cut the prompt is refused, naming what it needs."""
    source = resolve_model_source(str(tiny_checkpoint), "cpu")
    full = load_model(source, "cpu")
    short = load_model(source, "cpu", prompt_tokens=parse_stack("text-tokens").prompt_tokens())
    assert full.prompt.prompt_embeds.shape[1] == 512 and short.prompt.prompt_embeds.shape[1] == 256
    assert not torch.equal(full.prompt.prompt_embeds[:, :256], short.prompt.prompt_embeds), \
        "T5 attends over the padding: a shorter encoding is another conditioning (hence lossy)"
    result = generate_with(short, Scenario(64, 64, 2))
    assert result.image.shape == (64, 64, 3)
    with pytest.raises(PromptTokensError, match=r"text-tokens:16: the prompt needs \d+ T5 tokens; 16 would cut it"):
        load_model(source, "cpu", prompt_tokens=16)


def test_static_fp8_scales_calibrate_on_loaded_weights_after_the_encoders_are_released(tiny_checkpoint):
    """Calibration is a generation on the built pipeline: with real weights it runs on them, with
    the prompt encoded once before the text encoders were let go."""
    pytest.importorskip("torchao.prototype.quantization.quant_api")
    logs = []
    runner = CaseRunner(resolve_model_source(str(tiny_checkpoint), "cpu"), "cpu", log=logs.append)
    case = runner.case(parse_stack("fp8-static:64x64@2-s1"), Scenario(64, 64, 2))
    assert case.prepared.model.text_encoders_released
    result = case.round()
    assert result.image.shape == (64, 64, 3) and result.image.std() > 1.0
    assert case.prepared.stack.report()["fp8-static:64x64@2-s1"]["calibrated_linears"] > 0
    assert any("calibrated in" in line for line in logs)
