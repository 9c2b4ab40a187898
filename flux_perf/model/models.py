"""Model sources: which weights a pipeline is built from, and their fingerprint.

- `synthetic`: the full FLUX.1-Kontext-dev architecture with deterministic random
  weights drawn on the GPU (real shapes, so real latency). Default on a GPU.
- `tiny`: the same code path with a tiny configuration, for CPU tests.
- a local directory, or a hub id said as `hub:owner/name`: real weights through
  `from_pretrained`, used only when the user points at them.

A fingerprint names the weights, so baselines of different weights never mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

ENV_MODEL = "FLUX_PERF_MODEL"
# Bump when the synthetic initialisation changes: old baselines then no longer match.
INIT_SCHEME = "uniform-fan-in/v1"


@dataclass(frozen=True)
class Architecture:
    """Configs of the three parts we build ourselves, and the prompt-embedding shapes."""

    name: str
    transformer: dict
    vae: dict
    scheduler: dict
    text_tokens: int

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "transformer": self.transformer,
            "vae": self.vae,
            "scheduler": self.scheduler,
            "text_tokens": self.text_tokens,
            # The prompt-embedding widths, as the transformer reads them (kept in the fingerprint).
            "text_dim": self.transformer["joint_attention_dim"],
            "pooled_dim": self.transformer["pooled_projection_dim"],
        }


# FLUX.1 flow-match scheduler: dynamic shifting with these bounds. A bare
# FlowMatchEulerDiscreteScheduler ignores `mu` and gives other timesteps.
FLUX_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

FULL = Architecture(
    name="flux.1-kontext-dev",
    # diffusers' defaults are FLUX.1-dev's except guidance_embeds.
    transformer={
        "patch_size": 1,
        "in_channels": 64,
        "num_layers": 19,
        "num_single_layers": 38,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "pooled_projection_dim": 768,
        "guidance_embeds": True,
        "axes_dims_rope": [16, 56, 56],
    },
    vae={
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 16,
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "sample_size": 1024,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "force_upcast": True,
    },
    scheduler=FLUX_SCHEDULER,
    text_tokens=512,
)

# Same classes and code path, small enough to run end to end on a CPU in well under a second.
TINY = Architecture(
    name="flux-kontext-tiny",
    transformer={**FULL.transformer, "in_channels": 16, "num_layers": 2, "num_single_layers": 2,
                 "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                 "pooled_projection_dim": 32, "axes_dims_rope": [4, 6, 6]},
    vae={**FULL.vae, "latent_channels": 4, "block_out_channels": [16, 16, 16, 16], "layers_per_block": 1,
         "norm_num_groups": 8, "sample_size": 128},
    scheduler=FLUX_SCHEDULER,
    text_tokens=16,
)


class ModelSourceError(ValueError):
    """A model source that cannot be used."""


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from. `location` is a directory or hub id for `pretrained`."""

    kind: str  # "synthetic" | "tiny" | "pretrained"
    seed: int = 0
    location: str | None = None
    _fingerprint: str | None = field(default=None, compare=False, repr=False)

    @property
    def architecture(self) -> Architecture | None:
        return {"synthetic": FULL, "tiny": TINY}.get(self.kind)

    @property
    def is_hub(self) -> bool:
        """A hub id (only `hub:` makes one); local directories are stored absolute."""
        return self.kind == "pretrained" and not Path(self.location).is_absolute()

    @property
    def label(self) -> str:
        return self.location if self.kind == "pretrained" else self.kind

    def default_dtype_name(self, device: str) -> str:
        # bf16 is very slow on CPUs: the tiny model runs in fp32 there.
        if device.startswith("cuda"):
            return "bfloat16"
        return "float32"

    def fingerprint(self) -> str:
        """Short hash naming the weights (not the software that runs them)."""
        if self.kind == "pretrained":
            return _pretrained_fingerprint(self.location)
        arch = self.architecture
        payload = json.dumps(
            {"arch": arch.to_dict(), "seed": self.seed, "init": INIT_SCHEME}, sort_keys=True
        )
        return f"{self.kind}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


HUB_PREFIX = "hub:"


def label_to_spec(label: str) -> str:
    """The --model text of a ModelSource.label as results record it: the kind, a local directory
    (absolute) or a hub id (without its prefix there)."""
    return label if label in ("synthetic", "tiny") or Path(label).is_absolute() else f"{HUB_PREFIX}{label}"


def resolve_model_source(text: str | None, device: str, seed: int = 0) -> ModelSource:
    """`synthetic`, `tiny`, a local diffusers pipeline directory, or `hub:owner/name`.

    None takes $FLUX_PERF_MODEL, else the synthetic full-size model on a GPU and
    the tiny one on a CPU. Only an explicit `hub:` may reach the network: a mistyped
    path must not turn into a download attempt.
    """
    text = text or os.environ.get(ENV_MODEL) or ("synthetic" if device.startswith("cuda") else "tiny")
    if text in ("synthetic", "tiny"):
        return ModelSource(text, seed=seed)
    if text.startswith(HUB_PREFIX):
        repo_id = text[len(HUB_PREFIX):]
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
            raise ModelSourceError(f"hub id {text!r} is not of the form hub:owner/name "
                                   "(e.g. hub:black-forest-labs/FLUX.1-Kontext-dev)")
        return ModelSource("pretrained", seed=seed, location=repo_id)
    path = Path(text).expanduser()
    if path.is_dir():
        _check_model_index(path.resolve() / "model_index.json", text)
        return ModelSource("pretrained", seed=seed, location=str(path.resolve()))
    what = "a file, not a directory" if path.exists() else "no such directory"
    raise ModelSourceError(
        f"unknown model {text!r}: neither 'synthetic', 'tiny', a local directory ({what}: "
        f"resolved to {path.resolve()}) nor a hub id; to download from the hub say hub:owner/name "
        "(e.g. hub:black-forest-labs/FLUX.1-Kontext-dev)"
    )


HUB_HELP = ("download it where the hub is reachable (`hf download {repo} --local-dir DIR`; a gated model "
            "needs its licence accepted and HF_TOKEN set there) and pass the folder: --flux-model DIR "
            "(flux-perf run --model DIR); or use a stand-in checkpoint without any hub: "
            "python3 -m flux_perf.model.checkpoint DIR (docs/real-weights.md)")


HUB_RESOLVE_TIMEOUT_S = 5.0


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached from this machine, found without sending any request (so no
    token leaves); None when offline mode is off and the hub's host name resolves."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    failed: list = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443)
        except (OSError, UnicodeError) as error:
            failed.append(error)

    # getaddrinfo has no timeout of its own, and a resolver that never answers must not hang the run.
    lookup = threading.Thread(target=resolve, daemon=True)
    lookup.start()
    lookup.join(HUB_RESOLVE_TIMEOUT_S)
    if lookup.is_alive():
        return f"the hub's host {host} did not resolve within {HUB_RESOLVE_TIMEOUT_S:g} s"
    if failed:
        return f"the hub's host {host} does not resolve ({getattr(failed[0], 'strerror', None) or failed[0]})"
    return None


def hub_cached(repo_id: str) -> bool:
    """The local hub cache holds the pipeline's index (a download done before)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)


def check_hub_source(source: ModelSource) -> bool:
    """A hub model must be in the local cache or the hub reachable: fail here, before any request.
    Returns whether to load from local files only (a folder, or a hub model whose hub is out of
    reach), from one look at the hub."""
    if not source.is_hub:
        return True
    reason = hub_unreachable()
    if reason and not hub_cached(source.location):
        from huggingface_hub import constants

        raise ModelSourceError(
            f"model hub:{source.location} cannot be loaded on this machine: {reason} and it is not in the "
            f"local hub cache ({constants.HF_HUB_CACHE}). To use it, " + HUB_HELP.format(repo=source.location)
        )
    return reason is not None


def _check_model_index(index: Path, text: str) -> None:
    """Fail here, naming the file, rather than with a bare KeyError deep inside diffusers."""
    if not index.is_file():
        raise ModelSourceError(
            f"model directory {text!r} has no model_index.json: not a diffusers pipeline folder"
        )
    try:
        content = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelSourceError(f"{index} is not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise ModelSourceError(f"{index} holds a JSON {type(content).__name__}, not an object with '_class_name'")
    if not content.get("_class_name"):
        raise ModelSourceError(
            f"{index} has no '_class_name': not a diffusers pipeline index "
            '(FLUX.1-Kontext-dev says "_class_name": "FluxKontextPipeline")'
        )


# Hashing 24 GB of weights would take minutes: hash configs plus each weight file's
# name, size and safetensors header (which lists every tensor's name, dtype, shape, offsets).
_HEADER_BYTES = 16 * 1024 * 1024


def _pretrained_fingerprint(location: str) -> str:
    root = Path(location)
    digest = hashlib.sha256()
    if not root.is_dir():
        digest.update(f"hub:{location}".encode())
        return f"pretrained-{digest.hexdigest()[:12]}"
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".json":
            digest.update(rel.encode() + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin", ".pt"):
            digest.update(f"{rel}:{path.stat().st_size}".encode())
            with path.open("rb") as handle:
                digest.update(handle.read(_HEADER_BYTES))
    return f"pretrained-{digest.hexdigest()[:12]}"
