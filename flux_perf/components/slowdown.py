"""Test-only planted slow-down: real extra GPU work before every transformer step, sized as a
fraction of the step's own FLOPs, to prove the latency gate catches a regression that small."""

from __future__ import annotations

import torch

from ..flops import transformer_step_flops
from .base import Component, parse_float_param


class Slowdown(Component):
    name = "slowdown"
    summary = "test-only: extra matmul work worth FRACTION of each step's FLOPs (e.g. slowdown:0.05)"
    phase = 1
    lossless = True  # the extra work writes only to its own buffer
    default_param = "0.05"

    def __init__(self, param=None):
        super().__init__(param)
        self.buffers: dict[tuple, tuple] = {}
        self.extra_flops = 0.0

    def validate_param(self) -> None:
        parse_float_param(self, 0.0, 10.0)

    def apply(self, pipe) -> None:
        transformer = pipe.transformer
        config = dict(transformer.config)
        width = min(4096, config["num_attention_heads"] * config["attention_head_dim"])
        dtype = next(transformer.parameters()).dtype

        def extra_work(_module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            text = kwargs.get("encoder_hidden_states")
            flops = transformer_step_flops(config, hidden.shape[1], text.shape[1] if text is not None else 0)
            rows = max(16, int(round(float(self.param) * flops / (2 * width * width) / 16)) * 16)
            key = (rows, hidden.device)
            if key not in self.buffers:
                generator = torch.Generator(device=hidden.device).manual_seed(0)
                a = torch.randn(rows, width, device=hidden.device, dtype=dtype, generator=generator)
                b = torch.randn(width, width, device=hidden.device, dtype=dtype, generator=generator)
                self.buffers[key] = (a, b, torch.empty(rows, width, device=hidden.device, dtype=dtype))
            a, b, sink = self.buffers[key]
            torch.mm(a, b, out=sink)  # written to a kept buffer so no compiler can drop it
            self.extra_flops = 2.0 * rows * width * width

        transformer.register_forward_pre_hook(extra_work, with_kwargs=True)

    def report(self) -> dict:
        return {"fraction": float(self.param), "extra_flops_per_step": self.extra_flops}


COMPONENTS = (Slowdown,)
