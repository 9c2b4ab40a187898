"""Running the suite under `torchrun --nproc-per-node N` (context parallelism).

Every rank builds the pipeline, runs every generation and times it with CUDA events on its
own GPU; an image is done when the slowest rank is, so the rounds judged are the per-round
maximum over ranks and every rank reaches the same verdict. Only rank 0 writes baselines,
recorded latencies and reports.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init_if_launched(device: str) -> str:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs) and return this
    rank's device. A plain single process is left alone."""
    if world_size() <= 1:
        return device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def slowest_rounds(samples: list[float]) -> list[float]:
    """Per-round maximum over ranks (every rank gets the same list)."""
    if not active():
        return samples
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(samples))
    return [max(values) for values in zip(*gathered)]


def gathered(value) -> list:
    """Every rank's value, in rank order, on every rank ([value] without torchrun)."""
    if not active():
        return [value]
    values: list = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def from_main(value):
    """Rank 0's value, on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
