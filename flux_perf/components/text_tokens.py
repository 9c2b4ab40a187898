"""Encode the prompt to its own length instead of FLUX's 512 T5 tokens: every joint-attention
layer then attends over fewer text tokens (512 of 8704 tokens at 1024x1024, 512 of 2560 at 512).

Opt-in and lossy: T5 attends over the padding too, so a shorter encoding is a different
conditioning, and the fidelity gate judges it like any lossy stack.
"""

from __future__ import annotations

from ..model.prompt_tokens import MAX_TOKENS
from .base import Component, ComponentError, Phase


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
