"""Context parallelism: one image's tokens split across GPUs (diffusers ContextParallelConfig),
run under `torchrun --nproc-per-node N` with NCCL."""

from __future__ import annotations

import re

import torch

from .base import Component, ComponentError, Phase

_PARAM = re.compile(r"^(ulysses|ring)(\d+)$")


class ContextParallel(Component):
    name = "cp"
    summary = "diffusers context parallelism; parameter ulyssesN or ringN (N GPUs, one process each)"
    phase = Phase.PARALLEL  # before compile: the parallel hooks must be traced with the blocks
    lossless = True
    needs_cuda = True
    default_param = "ulysses2"

    def validate_param(self) -> None:
        match = _PARAM.match(str(self.param))
        if not match or int(match[2]) < 2:
            raise ComponentError(f"cp:{self.param}: write cp:ulyssesN or cp:ringN with N >= 2")
        self.kind, self.degree = match[1], int(match[2])

    def extra_unmet(self, caps):
        if caps.gpu_count < self.degree:
            return f"cp:{self.param} needs {self.degree} GPUs, {caps.gpu_count} visible"
        if caps.world_size != self.degree:
            return (f"cp:{self.param} needs {self.degree} processes: launch with "
                    f"`torchrun --nproc-per-node {self.degree} -m pytest -m h100 ...` (world size now {caps.world_size})")
        return None

    def apply(self, pipe) -> None:
        from diffusers import ContextParallelConfig

        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("cp: torch.distributed is not initialised (run under torchrun)")
        config = (ContextParallelConfig(ulysses_degree=self.degree) if self.kind == "ulysses"
                  else ContextParallelConfig(ring_degree=self.degree))
        pipe.transformer.enable_parallelism(config=config)

