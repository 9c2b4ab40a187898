"""Encode the prompt to its own length instead of FLUX's 512 T5 tokens: every joint-attention
layer then attends over fewer text tokens (512 of 8704 tokens at 1024x1024, 512 of 2560 at 512).

Opt-in and lossy: T5 attends over the padding too, so a shorter encoding is a different
conditioning, and the fidelity gate judges it like any lossy stack.
"""

from __future__ import annotations

from .base import Component, ComponentError, Phase

# Rounded up to this: the image tokens are multiples of 256 at the guide's sizes, and cuDNN's FP8
# attention takes keys in tiles of 256. On the H100 at 1024x1024@8, 128 text tokens (8320 in all)
# saved nothing over 512, while 256 (8448) saved 4.5 % (docs/fast-stack.md).
ROUND_TO = 256
MAX_TOKENS = 512  # FLUX.1's T5 context


class TextTokens(Component):
    name = "text-tokens"
    summary = ("encode the prompt to its own T5 length rounded up to 256 (text-tokens) or to N tokens "
               "(text-tokens:N) instead of 512")
    exclusive = "text-tokens"
    phase = Phase.SCHEDULE
    lossless = False
    default_param = "auto"

    def validate_param(self) -> None:
        if self.param == "auto":
            return
        if not str(self.param).isdigit() or not 16 <= int(self.param) <= MAX_TOKENS or int(self.param) % 16:
            raise ComponentError(f"text-tokens:{self.param}: give 'auto' or a multiple of 16 from 16 to {MAX_TOKENS}")

    def prompt_tokens(self) -> int | str:
        return "auto" if self.param == "auto" else int(self.param)


def resolve_prompt_tokens(asked: int | str | None, needed: int | None) -> int:
    """The T5 length to encode to: 512 unless asked; "auto" rounds the prompt's own length up
    (256 when there is no tokenizer: synthetic embeddings have no prompt). A length that would
    cut the prompt is refused: that would edit with another instruction."""
    if asked is None:
        return MAX_TOKENS
    if asked == "auto":
        return min(MAX_TOKENS, max(1, -(-(needed or 1) // ROUND_TO)) * ROUND_TO)
    if needed is not None and needed > asked:
        raise ComponentError(f"text-tokens:{asked}: the prompt needs {needed} T5 tokens; {asked} would cut it "
                             f"(use text-tokens or text-tokens:{-(-needed // 16) * 16})")
    return asked
