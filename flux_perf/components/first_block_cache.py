"""First Block Cache (diffusers FirstBlockCacheConfig): when the first block's residual barely
changes between steps, reuse the cached output of the remaining blocks.

It reads a value back to the host every step (so no CUDA graphs); the cache context every
generation runs in comes from DiffusersCache."""

from __future__ import annotations

from .base import parse_float_param
from .diffusers_cache import DiffusersCache


class FirstBlockCache(DiffusersCache):
    name = "fbc"
    summary = "diffusers First Block Cache; parameter: residual-difference threshold (guide: 0.12)"
    default_param = "0.12"

    def validate_param(self) -> None:
        parse_float_param(self, 0.0, 10.0)

    def apply(self, pipe) -> None:
        from diffusers import FirstBlockCacheConfig
        from diffusers.hooks import HookRegistry

        transformer = pipe.transformer
        transformer.enable_cache(FirstBlockCacheConfig(threshold=float(self.param)))
        registry = HookRegistry.check_if_exists_or_initialize(transformer.transformer_blocks[0])
        leader = next(h for h in registry.hooks.values() if hasattr(h, "_should_compute_remaining_blocks"))
        decide = leader._should_compute_remaining_blocks

        def recording_decision(residual):
            compute = decide(residual)
            self.decisions.append(bool(compute))
            return compute

        leader._should_compute_remaining_blocks = recording_decision

    def report(self) -> dict:
        steps, skipped = self.steps()
        return {"threshold": float(self.param), "steps_seen": steps, "steps_cached": skipped,
                "cache_rate": skipped / steps if steps else 0.0}

