"""Test-only planted break: noise added to the transformer's output at every step, sized as a
fraction of that output's RMS, to prove the fidelity gate fails a real break.

The noise is one fixed, seeded tensor per output shape (drawn once, then only added), so every
round gives the same image, CUDA graphs can replay it, and a compiled stack compiles nothing new.
"""

from __future__ import annotations

import torch

from .base import Component, Phase, parse_float_param


class PlantedNoise(Component):
    name = "noise"
    summary = "test-only: Gaussian noise worth FRACTION of the transformer output's RMS, every step (noise:0.01)"
    phase = Phase.INSTRUMENT
    lossless = False
    test_only = True
    default_param = "0.01"

    def __init__(self, param=None):
        super().__init__(param)
        self.noise: dict[tuple, torch.Tensor] = {}  # (shape, device, dtype) -> the fixed noise tensor
        self.steps_seen = 0

    def validate_param(self) -> None:
        parse_float_param(self, 0.0, 1.0)

    def apply(self, pipe) -> None:
        fraction = float(self.param)

        def add_noise(_module, _args, _kwargs, output):
            sample = output[0] if isinstance(output, tuple) else output.sample
            key = (tuple(sample.shape), sample.device, sample.dtype)
            if key not in self.noise:
                generator = torch.Generator(device=sample.device).manual_seed(1234)
                self.noise[key] = torch.randn(sample.shape, generator=generator, device=sample.device,
                                              dtype=torch.float32)
            rms = sample.float().pow(2).mean().sqrt()
            noisy = (sample.float() + fraction * rms * self.noise[key]).to(sample.dtype)
            self.steps_seen += 1
            if isinstance(output, tuple):
                return (noisy, *output[1:])
            output.sample = noisy
            return output

        pipe.transformer.register_forward_hook(add_noise, with_kwargs=True)

    def report(self) -> dict:
        return {"fraction": float(self.param), "steps_seen": self.steps_seen}

    def reset_report(self) -> None:
        self.steps_seen = 0

    def release(self, pipe) -> None:
        self.noise.clear()  # one latent-sized tensor per shape, on the GPU
