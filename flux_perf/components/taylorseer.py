"""TaylorSeer (diffusers TaylorSeerCacheConfig, lite mode): after the first full steps, every
N-th step runs the transformer; the steps between run no block at all, and the output projection's
result is extrapolated from the last full steps (first-order Taylor series in the step index).

Fewer FLOPs, lossy, opt-in: it changes the output, so it is judged as its own stack against the
bf16 baseline, never folded into `fast`. The step decision is a host-side counter, so CUDA graphs
of the whole step cannot replay it."""

from __future__ import annotations

import re

from .base import ComponentError
from .diffusers_cache import DiffusersCache

# Full steps before the first extrapolated one: two to take a first difference from, and one more.
FULL_STEPS_FIRST = 3


class TaylorSeerCache(DiffusersCache):
    name = "taylorseer"
    summary = ("diffusers TaylorSeer cache, lite mode: between full steps no block runs and proj_out's output is "
               f"extrapolated (first {FULL_STEPS_FIRST} steps full); parameter: every how many steps one is full")
    default_param = "2"

    def __init__(self, param=None):
        super().__init__(param)
        self.eager_update = None  # diffusers' TaylorSeerState.update while this stack runs a compiler-disabled one

    def validate_param(self) -> None:
        # 1 would make every step a full one: no cache at all, under a lossy name.
        if not (re.fullmatch(r"[0-9]+", self.param) and 2 <= int(self.param) <= 10):
            raise ComponentError(f"{self.name}:{self.param}: parameter must be a whole number of steps in [2, 10]")
        self.interval = int(self.param)

    def apply(self, pipe) -> None:
        import torch
        from diffusers import TaylorSeerCacheConfig
        from diffusers.hooks import HookRegistry
        from diffusers.hooks.taylorseer_cache import TaylorSeerState

        # The state update reads the step counter: traced inside a compiled block, dynamo guards on
        # it and compiles the block again at every full step, past its recompile limit (then eager).
        # Wrapped once: a second stack applied before the first is released finds it wrapped and leaves it.
        if self.eager_update is None and not hasattr(TaylorSeerState.update, "flux_perf_outside_compile"):
            self.eager_update = TaylorSeerState.update
            TaylorSeerState.update = torch.compiler.disable(self.eager_update)
            TaylorSeerState.update.flux_perf_outside_compile = True

        transformer = pipe.transformer
        transformer.enable_cache(TaylorSeerCacheConfig(
            cache_interval=self.interval, disable_cache_before_step=FULL_STEPS_FIRST, max_order=1,
            taylor_factors_dtype=torch.float32, use_lite_mode=True))
        registry = HookRegistry.check_if_exists_or_initialize(transformer.proj_out)
        hook = next(h for h in registry.hooks.values() if hasattr(h, "_measure_should_compute"))
        decide = hook._measure_should_compute

        def recording_decision():
            compute, state = decide()
            self.decisions.append(bool(compute))
            return compute, state

        hook._measure_should_compute = recording_decision

    def release(self, pipe) -> None:
        if self.eager_update is not None:
            from diffusers.hooks.taylorseer_cache import TaylorSeerState

            TaylorSeerState.update = self.eager_update
            self.eager_update = None

    def report(self) -> dict:
        steps, extrapolated = self.steps()
        return {"interval": self.interval, "steps_seen": steps, "steps_extrapolated": extrapolated,
                "extrapolated_rate": extrapolated / steps if steps else 0.0}
