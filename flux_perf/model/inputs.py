"""Inputs of a generation: prompt embeddings and the reference image to edit."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .synthetic_weights import tensor_seed

# A Kontext edit instruction; used when real text encoders are present.
DEFAULT_PROMPT = "Make the astronaut's suit bright red and keep everything else unchanged"
# A real photograph shipped inside scikit-image (no download).
DEFAULT_REFERENCE = "astronaut"


@dataclass(frozen=True)
class PromptEmbeddings:
    prompt_embeds: torch.Tensor  # (1, tokens, text_dim)
    pooled_prompt_embeds: torch.Tensor  # (1, pooled_dim)
    source: str  # "synthetic" or "text-encoders"
    encode_s: float = 0.0  # the text encoders' time when these were first computed (0 for synthetic)


class PromptCache:
    """Prompt embeddings kept for the models of one runner: a stack built again reuses them (T5-XXL
    takes seconds to encode) and reports the first encoding's time. Owned by whoever builds the
    models, so no run's embeddings outlive it or leak into another's."""

    def __init__(self):
        self._entries: dict[tuple, PromptEmbeddings] = {}

    def synthetic(self, tokens: int, text_dim: int, pooled_dim: int, seed: int, device: str,
                  dtype: torch.dtype) -> PromptEmbeddings:
        """Deterministic stand-ins with the shapes T5-XXL and CLIP-L give ((1, 512, 4096), (1, 768))."""
        key = ("synthetic", tokens, text_dim, pooled_dim, seed, str(device), dtype)
        if key not in self._entries:
            def draw(name: str, shape: tuple) -> torch.Tensor:
                generator = torch.Generator(device="cpu").manual_seed(tensor_seed(seed, name))
                # Drawn on the CPU in fp32 so every device and dtype sees the same values.
                return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

            self._entries[key] = PromptEmbeddings(
                draw("prompt_embeds", (1, tokens, text_dim)),
                draw("pooled_prompt_embeds", (1, pooled_dim)),
                "synthetic",
            )
        return self._entries[key]

    def encoded(self, pipe, prompt: str, device: str, cache_key: str, max_tokens: int = 512) -> PromptEmbeddings:
        """Run the pipeline's own text encoders once per (weights, prompt, device, length); later
        calls reuse the result, which keeps the encoding's own time (`encode_s`)."""
        key = self._encoded_key(prompt, device, cache_key, max_tokens)
        if key not in self._entries:
            start = time.perf_counter()
            with torch.no_grad():
                prompt_embeds, pooled, _ = pipe.encode_prompt(
                    prompt=prompt, prompt_2=None, device=device, max_sequence_length=max_tokens
                )
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            self._entries[key] = PromptEmbeddings(prompt_embeds, pooled, "text-encoders",
                                                  time.perf_counter() - start)
        return self._entries[key]

    def has_encoded(self, prompt: str, device: str, cache_key: str, max_tokens: int = 512) -> bool:
        return self._encoded_key(prompt, device, cache_key, max_tokens) in self._entries

    @staticmethod
    def _encoded_key(prompt: str, device: str, cache_key: str, max_tokens: int) -> tuple:
        return ("encoded", cache_key, prompt, str(device), max_tokens)


def prompt_token_count(pipe, prompt: str) -> int:
    """T5 tokens the prompt takes, end-of-sequence included, before padding."""
    return len(pipe.tokenizer_2(prompt, truncation=False).input_ids)


@functools.lru_cache(maxsize=16)
def reference_image(height: int, width: int, name: str = DEFAULT_REFERENCE) -> np.ndarray:
    """The photograph `skimage.data.<name>`, centre-cropped to the aspect ratio and resized
    to exactly (height, width); uint8 RGB, read-only."""
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f"skimage.data has no image named {name!r}")
    pixels = loader()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    pixels = pixels[..., :3]
    src_h, src_w = pixels.shape[:2]
    target_ratio = width / height
    if src_w / src_h > target_ratio:
        crop_w = round(src_h * target_ratio)
        left = (src_w - crop_w) // 2
        pixels = pixels[:, left : left + crop_w]
    else:
        crop_h = round(src_w / target_ratio)
        top = (src_h - crop_h) // 2
        pixels = pixels[top : top + crop_h]
    resized = Image.fromarray(np.ascontiguousarray(pixels)).resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(resized, dtype=np.uint8).copy()
    array.setflags(write=False)
    return array
