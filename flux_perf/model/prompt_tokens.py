"""How many T5 tokens the prompt is encoded to (the `text-tokens` component asks for fewer)."""

from __future__ import annotations

# Rounded up to this: the image tokens are multiples of 256 at the guide's sizes, and cuDNN's FP8
# attention takes keys in tiles of 256. On the H100 at 1024x1024@8, 128 text tokens (8320 in all)
# saved nothing over 512, while 256 (8448) saved 4.5 % (docs/fast-stack.md).
ROUND_TO = 256
MAX_TOKENS = 512  # FLUX.1's T5 context


class PromptTokensError(ValueError):
    """A T5 length that would cut the prompt."""


def resolve_prompt_tokens(asked: int | str | None, needed: int | None) -> int:
    """The T5 length to encode to: 512 unless asked; "auto" rounds the prompt's own length up
    (256 when there is no tokenizer: synthetic embeddings have no prompt). A length that would
    cut the prompt is refused: that would edit with another instruction."""
    if asked is None:
        return MAX_TOKENS
    if asked == "auto":
        return min(MAX_TOKENS, max(1, -(-(needed or 1) // ROUND_TO)) * ROUND_TO)
    if needed is not None and needed > asked:
        raise PromptTokensError(f"text-tokens:{asked}: the prompt needs {needed} T5 tokens; {asked} would cut it "
                             f"(use text-tokens or text-tokens:{-(-needed // 16) * 16})")
    return asked
