"""Build a ready `FluxKontextPipeline` from a model source."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .inputs import (
    DEFAULT_PROMPT,
    PromptCache,
    PromptEmbeddings,
    prompt_token_count,
)
from .models import HUB_HELP, ModelSource, ModelSourceError, check_hub_source
from .prompt_tokens import resolve_prompt_tokens
from .redact import scrub, scrubbed_logging
from .synthetic_weights import build_on_device

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class DeviceError(RuntimeError):
    """The requested device does not exist here."""


class ModelLoadError(ModelSourceError):
    """from_pretrained failed: the message says why, scrubbed, without the library's frames."""


class DeviceNameError(ValueError):
    """A device name the suite cannot run on."""


def check_device_name(device: str) -> None:
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cuda", "cpu"):
        raise DeviceNameError(f"device {device!r} is not supported: use 'cuda', 'cuda:N' or 'cpu'")


def check_device(device: str) -> str:
    """A supported device name that exists on this machine."""
    check_device_name(device)
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {device!r} asked for, but no CUDA GPU is visible to PyTorch "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda})"
        )
    return device


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str | None, source: ModelSource, device: str) -> torch.dtype:
    name = name or source.default_dtype_name(device)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def build_pipeline(source: ModelSource, device: str, dtype: torch.dtype):
    """A FluxKontextPipeline on `device`, progress bar off. Synthetic and tiny weights are
    drawn in place; pretrained ones come through `from_pretrained`."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel

    check_device(device)
    if source.kind == "pretrained":
        pipe = _from_pretrained(FluxKontextPipeline, source, dtype)
        pipe.to(device)
    else:
        arch = source.architecture
        transformer = build_on_device(
            FluxTransformer2DModel, arch.transformer, source.seed, "transformer", device, dtype
        )
        vae = build_on_device(AutoencoderKL, arch.vae, source.seed, "vae", device, dtype)
        pipe = FluxKontextPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**arch.scheduler),
            vae=vae,
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            transformer=transformer,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _from_pretrained(pipeline_cls, source: ModelSource, dtype: torch.dtype):
    """A local folder never goes to the network (a missing file is an error, not a download); a hub
    id is asked for only when the hub is reachable, else loaded from the local cache. No token
    argument: huggingface_hub reads HF_TOKEN itself. A failure comes back as a ModelLoadError with a
    scrubbed message and no chained exception: the hub's frames hold the token in their request
    headers, and pytest --tb=long / -l prints every frame's locals."""
    local_only = check_hub_source(source)  # not cached and no hub: a clear error before any request
    try:
        with scrubbed_logging():
            return pipeline_cls.from_pretrained(source.location, dtype=dtype, local_files_only=local_only,
                                                **_absent_components(pipeline_cls, source.location))
    except Exception as error:  # noqa: BLE001 - any failure: its frames may hold the token
        reason = _reasons(error)
    # Raised outside the except clause: no __context__ to print, so no hub frame and no header.
    what = HUB_HELP.format(repo=source.location) if source.is_hub else \
        "check that the folder is a complete diffusers pipeline (docs/real-weights.md)"
    raise ModelLoadError(f"cannot load model {'hub:' if source.is_hub else ''}{source.location}: {reason}. "
                         f"To use it, {what}")


def _reasons(error: BaseException) -> str:
    """The error and the causes it chains (the frames are dropped), one line each, scrubbed."""
    seen, parts = set(), []
    while error is not None and id(error) not in seen and len(parts) < 4:
        seen.add(id(error))
        # The causes are listed here: diffusers' pointer to a traceback no longer shown goes.
        first = (str(error).strip().splitlines() or [""])[0].replace(_SEE_ABOVE, "").strip()
        part = f"{type(error).__name__}: {first}" if first else type(error).__name__
        if part not in parts:
            parts.append(part)
        error = error.__cause__ or error.__context__
    return scrub("; caused by ".join(parts))


_SEE_ABOVE = "Please check out the root cause in the stacktrace above."


def _absent_components(pipeline_cls, location: str) -> dict:
    """A local folder saved without text encoders (or image encoder) lists them as null:
    from_pretrained then needs them passed as None explicitly."""
    index_path = Path(location) / "model_index.json"
    if not index_path.is_file():
        return {}
    index = json.loads(index_path.read_text())
    expected, _optional = pipeline_cls._get_signature_keys(pipeline_cls)
    return {
        name: None for name in expected
        if not (isinstance(index.get(name), list) and index[name] and index[name][0])
    }


@dataclass
class FluxModel:
    """A built pipeline with what a measurement needs to know about it."""

    pipe: object
    source: ModelSource
    fingerprint: str
    device: str
    dtype: torch.dtype
    build_s: float
    prompt: PromptEmbeddings
    # Seconds the text encoders took on the prompt (0 for synthetic embeddings). The embeddings
    # are cached per process: a later build of the same weights reuses them and keeps this time.
    encode_prompt_s: float = 0.0
    # The encoders were dropped from the pipeline after encoding: the timed runs pass prompt_embeds.
    text_encoders_released: bool = False
    prompt_reused: bool = False  # the embeddings came from an earlier build in this process

    @property
    def transformer_config(self) -> dict:
        return dict(self.pipe.transformer.config)

    @property
    def vae_scale_factor(self) -> int:
        return self.pipe.vae_scale_factor


def load_model(source: ModelSource, device: str, dtype: torch.dtype | None = None,
               prompt: str = DEFAULT_PROMPT, prompt_tokens: int | str | None = None,
               prompts: PromptCache | None = None) -> FluxModel:
    """Build the pipeline and its prompt embeddings; time the build and the encoding.
    `prompt_tokens` is the T5 length to encode to (components/text_tokens.py); None: 512.
    `prompts` keeps embeddings between builds (a runner's); None encodes afresh."""
    check_device(device)
    dtype = dtype or resolve_dtype(None, source, device)
    # Import the pipeline classes before the clock starts (FluxKontextPipeline pulls in the text
    # encoders' modules from transformers, seconds of Python): the build time is the build's.
    from diffusers import AutoencoderKL, FluxKontextPipeline, FluxTransformer2DModel  # noqa: F401

    _sync(device)
    start = time.perf_counter()
    pipe = build_pipeline(source, device, dtype)
    _sync(device)
    build_s = time.perf_counter() - start
    fingerprint = source.fingerprint()
    prompts = prompts if prompts is not None else PromptCache()
    encode_prompt_s, released, prompt_reused = 0.0, False, False
    if getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "text_encoder_2", None) is not None:
        tokens = resolve_prompt_tokens(prompt_tokens, prompt_token_count(pipe, prompt))
        prompt_reused = prompts.has_encoded(prompt, device, fingerprint, tokens)
        embeddings = prompts.encoded(pipe, prompt, device, fingerprint, tokens)
        encode_prompt_s = embeddings.encode_s  # the first encoding's time, also when reused
        release_text_encoders(pipe, device)
        released = True
    else:
        config = pipe.transformer.config
        tokens = source.architecture.text_tokens if source.architecture else 512
        if prompt_tokens is not None:
            tokens = min(tokens, resolve_prompt_tokens(prompt_tokens, None))
        embeddings = prompts.synthetic(
            tokens, config.joint_attention_dim, config.pooled_projection_dim, source.seed, device, dtype
        )
    return FluxModel(pipe, source, fingerprint, device, dtype, build_s, embeddings, encode_prompt_s, released,
                     prompt_reused)


def free_memory(device: str) -> None:
    """Return dropped models' GPU memory now: diffusers pipelines hold reference cycles, so a dropped
    model keeps its GPU memory until a collection (and would count in the next peak). On a CPU the
    interpreter's own collections return it in time."""
    if torch.device(device).type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def release_text_encoders(pipe, device: str) -> None:
    """Drop the text encoders and tokenizers (T5-XXL alone is 9.5 GB): the pipeline then
    looks like the synthetic one, and memory-sensitive components (offload, ...) see the same."""
    pipe.register_modules(text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None)
    free_memory(device)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
