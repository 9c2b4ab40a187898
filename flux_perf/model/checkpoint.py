"""Write a FLUX.1-Kontext-dev-layout diffusers folder without any hub.

    python3 -m flux_perf.model.checkpoint OUT_DIR [--size full|tiny] [--device cuda|cpu] [--shard-size 5GB]

The folder has every part the real one has (model_index.json, transformer/, vae/,
text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/) with the real
classes and, at `--size full`, the real shapes. It is for exercising the real-weights path
(`from_pretrained`, text encoding, loading time) on machines that cannot reach the hub:
- transformer and VAE: the suite's synthetic weights (same seed, same values);
- text encoders: seeded random initialisation;
- tokenizers: built here from a made-up corpus (a byte-level BPE for CLIP, a sentencepiece
  unigram model for T5). Token ids are valid for the encoders but mean nothing.
Pictures made from it are noise; its latencies are real.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .models import FULL, TINY, Architecture
from .pipeline import free_memory
from .synthetic_weights import build_on_device
from .tokenizers import CheckpointError, made_up_corpus, write_clip_tokenizer, write_t5_tokenizer

# CLIP ViT-L/14 text tower, as FLUX.1 ships it. FLUX uses its pooled output (hidden_size wide).
CLIP_FULL = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
# T5 v1.1 XXL encoder.
T5_FULL = {
    "vocab_size": 32128, "d_model": 4096, "d_ff": 10240, "num_layers": 24, "num_heads": 64, "d_kv": 64,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
}
# Tiny widths must match the tiny transformer: joint_attention_dim 32 (T5) and pooled_projection_dim 32 (CLIP).
CLIP_TINY = {**CLIP_FULL, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
             "num_attention_heads": 2, "projection_dim": 32}
T5_TINY = {**T5_FULL, "d_model": 32, "d_ff": 37, "num_layers": 2, "num_heads": 2, "d_kv": 16}


@dataclass(frozen=True)
class Size:
    arch: Architecture
    clip: dict
    t5: dict
    dtype: torch.dtype  # what the files hold: bf16 like the real checkpoint; fp32 for the CPU-sized one


SIZES = {
    "full": Size(FULL, CLIP_FULL, T5_FULL, torch.bfloat16),
    "tiny": Size(TINY, CLIP_TINY, T5_TINY, torch.float32),
}

PARTS = ("model_index.json", "transformer", "vae", "text_encoder", "text_encoder_2",
         "tokenizer", "tokenizer_2", "scheduler")

# What `save_pretrained` writes for FluxKontextPipeline, with every component present.
MODEL_INDEX = {
    "_class_name": "FluxKontextPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "FluxTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def log(message: str) -> None:
    print(f"[checkpoint] {message}", flush=True)


def parse_shard_size(text: str) -> str:
    """'5GB', '500MB', '200KB': the form both diffusers and transformers accept."""
    if not re.fullmatch(r"[1-9][0-9]*(KB|MB|GB)", text):
        raise argparse.ArgumentTypeError(f"shard size {text!r}: give a whole number with KB, MB or GB, e.g. 5GB")
    return text


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _text_encoder(kind: str, config: dict, tokenizer, device: str, dtype: torch.dtype, seed: int,
                  meta: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if kind == "clip":
        specials = {} if tokenizer is None else {
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
        cls, cfg = CLIPTextModel, CLIPTextConfig(**config, **specials)
    else:
        cls, cfg = T5EncoderModel, T5Config(**config)
    if meta:
        with torch.device("meta"):
            return cls(cfg)
    torch.manual_seed(seed)  # transformers' own initialisation draws from the global generator
    with torch.device(device):
        model = cls(cfg)
    return model.to(dtype).eval().requires_grad_(False)


def estimate_bytes(size: Size) -> int:
    """Bytes of weights to write, from models built on the meta device (no memory)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    models = [_text_encoder("clip", size.clip, None, "meta", size.dtype, 0, meta=True),
              _text_encoder("t5", size.t5, None, "meta", size.dtype, 0, meta=True)]
    with torch.device("meta"):
        models += [FluxTransformer2DModel(**size.arch.transformer), AutoencoderKL(**size.arch.vae)]
    itemsize = torch.empty((), dtype=size.dtype).element_size()
    return sum(p.numel() for m in models for p in m.parameters()) * itemsize


def _save(name: str, model, folder: Path, shard_size: str, built_s: float) -> None:
    start = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    log(f"{name}: {type(model).__name__}, {params:,} parameters, built in {built_s:.1f} s; writing ...")
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=shard_size)
    files = len(list(folder.glob("*.safetensors")))
    log(f"{name}: {_gib(_dir_bytes(folder))} in {files} safetensors file(s), "
        f"written in {time.perf_counter() - start:.1f} s")


def _prepare_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise CheckpointError(
                f"{out} is not empty: refusing to write a checkpoint over it (pass --force to replace "
                f"the parts a checkpoint has: {', '.join(PARTS)})"
            )
        # Only our own parts go: stale shards of a bigger checkpoint would otherwise stay behind.
        for part in PARTS:
            path = out / part
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def make_checkpoint(out: str | Path, size: str = "tiny", device: str = "cpu", shard_size: str = "5GB",
                    force: bool = False, seed: int = 0) -> Path:
    """Write the folder; return its absolute path."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from .pipeline import check_device

    check_device(device)
    spec = SIZES[size]
    out = Path(out).expanduser().resolve()
    _prepare_out_dir(out, force)
    start = time.perf_counter()

    needed = estimate_bytes(spec)
    free = shutil.disk_usage(out).free
    log(f"{size} FLUX.1-Kontext checkpoint into {out} on {device}: about {_gib(needed)} of "
        f"{str(spec.dtype).removeprefix('torch.')} weights, {_gib(free)} free")
    if needed * 1.02 > free:  # small margin for configs and tokenizers
        raise CheckpointError(f"{out}: {_gib(free)} free, the checkpoint needs about {_gib(needed)}")

    corpus = made_up_corpus(seed)
    clip_tokenizer = write_clip_tokenizer(out / "tokenizer", corpus)
    log(f"tokenizer: CLIPTokenizer, byte-level BPE of {len(clip_tokenizer)} tokens")
    t5_tokenizer = write_t5_tokenizer(out / "tokenizer_2", corpus)
    log(f"tokenizer_2: T5TokenizerFast, sentencepiece unigram of {len(t5_tokenizer)} tokens")

    # One model in memory at a time: the full transformer alone is 23.8 GB.
    for name, kind, config, tokenizer in (("text_encoder", "clip", spec.clip, clip_tokenizer),
                                          ("text_encoder_2", "t5", spec.t5, t5_tokenizer)):
        built = time.perf_counter()
        model = _text_encoder(kind, config, tokenizer, device, spec.dtype, seed)
        _save(name, model, out / name, shard_size, time.perf_counter() - built)
        del model
        free_memory(device)
    for name, cls, config in (("vae", AutoencoderKL, spec.arch.vae),
                              ("transformer", FluxTransformer2DModel, spec.arch.transformer)):
        built = time.perf_counter()
        model = build_on_device(cls, config, seed, name, device, spec.dtype)
        _save(name, model, out / name, shard_size, time.perf_counter() - built)
        del model
        free_memory(device)

    FlowMatchEulerDiscreteScheduler(**spec.arch.scheduler).save_pretrained(out / "scheduler")
    # Written last: an interrupted run leaves a folder the suite refuses ("no model_index.json").
    import diffusers

    index = {"_class_name": MODEL_INDEX["_class_name"], "_diffusers_version": diffusers.__version__,
             **{k: v for k, v in MODEL_INDEX.items() if k != "_class_name"}}
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    log(f"done: {_gib(_dir_bytes(out))} in {time.perf_counter() - start:.1f} s; "
        f"use it with --flux-model {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m flux_perf.model.checkpoint",
        description="Write a FLUX.1-Kontext-dev-layout diffusers folder with synthetic weights (no hub).",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="full: the real shapes (about 31 GiB of bf16); tiny: a CPU-sized one (default full)")
    parser.add_argument("--device", default=None,
                        help="where the weights are drawn: cuda or cpu (default cuda if visible, else cpu)")
    parser.add_argument("--shard-size", type=parse_shard_size, default="5GB",
                        help="largest safetensors file, e.g. 5GB (default)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (the suite's synthetic model uses 0)")
    parser.add_argument("--force", action="store_true", help="replace a checkpoint already in OUT_DIR")
    args = parser.parse_args(argv)

    from .pipeline import DeviceError, default_device

    try:
        make_checkpoint(args.out_dir, args.size, args.device or default_device(), args.shard_size,
                        force=args.force, seed=args.seed)
    except (CheckpointError, DeviceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
