"""CUDA graphs for the denoising step: the whole transformer forward is captured once per
input shape and replayed, so 57 blocks' worth of kernel launches cost one launch.

Rules: shapes must be static (one graph per scenario), and nothing inside the step may
synchronise with the host (First Block Cache reads a value back every step)."""

from __future__ import annotations

import torch

from .base import Component, Phase


class _GraphedForward:
    """Replaces `module.forward`; captures on first sight of an input signature."""

    def __init__(self, module: torch.nn.Module, warmup_calls: int = 2):
        self.module = module
        self.eager_forward = module.forward
        self.warmup_calls = warmup_calls
        self.graphs: dict[tuple, tuple] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.captures = 0
        self.replays = 0

    @staticmethod
    def _signature(kwargs: dict) -> tuple:
        parts = []
        for key in sorted(kwargs):
            value = kwargs[key]
            if isinstance(value, torch.Tensor):
                parts.append((key, tuple(value.shape), value.dtype, value.device))
            elif isinstance(value, dict):
                if value:  # e.g. IP-adapter embeddings: not supported inside a static graph
                    raise RuntimeError(f"cuda-graphs cannot capture a call with {key}={list(value)}")
                parts.append((key, "{}"))
            else:
                parts.append((key, value))
        return tuple(parts)

    def _capture(self, kwargs: dict):
        static = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        # Warm up on a side stream (compiles, autotunes, allocates) before capturing.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_calls):
                self.eager_forward(**static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = self.eager_forward(**static)
        self.captures += 1
        return graph, static, output

    def __call__(self, *args, **kwargs):
        if args:
            raise RuntimeError("cuda-graphs expects the transformer to be called with keyword arguments")
        key = self._signature(kwargs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(kwargs)
        graph, static, output = self.graphs[key]
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                static[name].copy_(value)
        graph.replay()
        self.replays += 1
        return output


class CudaGraphs(Component):
    name = "cuda-graphs"
    summary = "capture the transformer forward in a CUDA graph per shape and replay it each step"
    phase = Phase.GRAPHS
    lossless = True
    needs_cuda = True
    tags = frozenset({"cuda-graphs"})
    conflicts_with = frozenset({"syncs-host"})

    def __init__(self, param=None):
        super().__init__(param)
        self.graphed: _GraphedForward | None = None

    def apply(self, pipe) -> None:
        self.graphed = _GraphedForward(pipe.transformer)
        pipe.transformer.forward = self.graphed

    def report(self) -> dict:
        if self.graphed is None:
            return {}
        return {"captured_graphs": self.graphed.captures, "replays": self.graphed.replays}

