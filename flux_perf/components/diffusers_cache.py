"""What the step caches diffusers provides (First Block Cache, TaylorSeer) need from the suite: the
Kontext pipeline opens no cache context of its own, so every generation is wrapped in one, started
from an empty cache."""

from __future__ import annotations

import contextlib

from .base import Component, Phase


class DiffusersCache(Component):
    phase = Phase.CACHE
    lossless = False
    # A per-step decision taken on the host (a value read back, or a step counter): a replayed CUDA graph
    # of the whole step cannot follow it.
    tags = frozenset({"syncs-host"})
    exclusive = "step cache"  # diffusers enables one cache per model
    conflicts_with = frozenset({"whole-model-compile"})  # its host-side decisions cannot be traced into one graph

    def __init__(self, param=None):
        super().__init__(param)
        self.decisions: list[bool] = []  # per step: True = the transformer ran, False = the cache served it

    def reset_report(self) -> None:
        self.decisions.clear()

    def steps(self) -> tuple[int, int]:
        """(steps seen, steps the cache served) since the last reset."""
        return len(self.decisions), len(self.decisions) - sum(self.decisions)

    def call_context(self, pipe):
        transformer = pipe.transformer

        @contextlib.contextmanager
        def fresh_cache_context():
            transformer._reset_stateful_cache()  # each generation starts from an empty cache
            with transformer.cache_context("flux-perf"):
                yield

        return fresh_cache_context
