"""One Kontext edit, timed per stage: reference encode, each denoising step, decode.

The denoising loop is the pipeline's own (`FluxKontextPipeline.__call__`); stage
marks are CUDA events recorded from its step callback, so timing adds no host
synchronisation inside the loop. The reference photo is resized and normalised once per
scenario, outside the timed call: that host work is the same for every stack and only
added noise (host-bound cases moved up to 35 % between identical runs).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .clocks import clock_for, stage_range
from .inputs import reference_image
from .scenarios import Scenario


@dataclass(frozen=True)
class StageTimes:
    encode_ms: float
    step_ms: tuple[float, ...]
    decode_ms: float
    wall_ms: float

    @property
    def denoise_ms(self) -> float:
        return float(sum(self.step_ms))

    @property
    def total_ms(self) -> float:
        return self.encode_ms + self.denoise_ms + self.decode_ms

    @property
    def median_step_ms(self) -> float:
        return float(statistics.median(self.step_ms))

    def to_dict(self) -> dict:
        return {
            "encode_ms": self.encode_ms,
            "denoise_ms": self.denoise_ms,
            "decode_ms": self.decode_ms,
            "total_ms": self.total_ms,
            "wall_ms": self.wall_ms,
            "step_ms": list(self.step_ms),
        }


@dataclass(frozen=True)
class Generation:
    image: np.ndarray  # (height, width, 3) uint8
    times: StageTimes
    latents: np.ndarray | None = None  # the VAE decoder's input, float32: fidelity before uint8 rounding


class ResolutionMismatch(RuntimeError):
    pass


def reference_pixels(pipe, scenario: Scenario, device: str, reference: np.ndarray | None = None) -> torch.Tensor:
    """The reference photo as the VAE's input tensor on `device` (host work, done once)."""
    reference = reference if reference is not None else reference_image(scenario.height, scenario.width)
    pixels = pipe.image_processor.preprocess(reference, scenario.height, scenario.width)
    return pixels.to(device=device, dtype=pipe.vae.dtype)


def _to_uint8(pipe, decoded: torch.Tensor) -> torch.Tensor:
    pixels = pipe.image_processor.postprocess(decoded, output_type="pt")  # [0, 1], (1, 3, H, W)
    return (pixels[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8)


def generate(
    pipe,
    scenario: Scenario,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    *,
    device: str,
    call_contexts: Sequence[Callable[[], contextlib.AbstractContextManager]] = (),
    pixels: torch.Tensor | None = None,
    clock=None,
) -> Generation:
    """Run one generation and return the uint8 image and per-stage times. `call_contexts` are
    entered around the pipeline call (First Block Cache's cache context, ...); `pixels` is the
    prepared reference (`reference_pixels`); `clock` the stage and wall clock (model/clocks.py)."""
    cuda = torch.device(device).type == "cuda"
    clock = clock or clock_for(device)
    if pixels is None:
        pixels = reference_pixels(pipe, scenario, device)
    generator = torch.Generator(device=device).manual_seed(scenario.seed)
    step_marks: list = []

    def on_step_end(_pipe, _index, _timestep, _kwargs):
        step_marks.append(clock.mark())
        return {}

    wall_start = clock.start_wall()
    with torch.inference_mode(), contextlib.ExitStack() as stack:
        for make_context in call_contexts:
            stack.enter_context(make_context())
        start = clock.mark()
        with stage_range("encode", cuda):
            image_latents = pipe._encode_vae_image(pixels, generator=generator)
        encoded = clock.mark()
        with stage_range("denoise", cuda):
            (latents,) = pipe(
                image=image_latents, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                height=scenario.height, width=scenario.width, num_inference_steps=scenario.steps,
                guidance_scale=scenario.guidance, generator=generator, output_type="latent", return_dict=False,
                callback_on_step_end=on_step_end,
                # Without these the pipeline snaps the output to 1 MP and the reference to
                # Kontext's preferred sizes: the resolution asked for would not be the one run.
                max_area=scenario.height * scenario.width, _auto_resize=False,
            )
        with stage_range("decode", cuda):
            latents, image = _decode(pipe, latents, scenario)
        end = clock.mark()
    image = image.cpu().numpy()  # synchronises: the wall clock covers all GPU work
    wall_ms = clock.wall_ms(wall_start)
    clock.settle()
    final_latents = latents[0].float().cpu().numpy()  # after the clock: ~1 MB, kept for fidelity

    _check_output(image, step_marks, scenario)
    bounds = [encoded, *step_marks]
    times = StageTimes(encode_ms=clock.elapsed_ms(start, encoded),
                       step_ms=tuple(clock.elapsed_ms(a, b) for a, b in zip(bounds, bounds[1:])),
                       decode_ms=clock.elapsed_ms(step_marks[-1], end), wall_ms=wall_ms)
    return Generation(image=image, times=times, latents=final_latents)


def _decode(pipe, latents: torch.Tensor, scenario: Scenario) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed final latents unpacked and rescaled (the VAE's input), and the uint8 image."""
    latents = pipe._unpack_latents(latents, scenario.height, scenario.width, pipe.vae_scale_factor)
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    decoded = pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]
    return latents, _to_uint8(pipe, decoded)


def _check_output(image, step_marks: list, scenario: Scenario) -> None:
    if image.shape != (scenario.height, scenario.width, 3):
        raise ResolutionMismatch(
            f"asked for {scenario.resolution}, the pipeline produced {image.shape[0]}x{image.shape[1]}"
        )
    if len(step_marks) != scenario.steps:
        raise RuntimeError(f"expected {scenario.steps} denoising steps, the pipeline ran {len(step_marks)}")


def generate_with(model, scenario: Scenario, call_contexts=(), pixels: torch.Tensor | None = None,
                  clock=None) -> Generation:
    """`generate` for a loaded `FluxModel`."""
    return generate(
        model.pipe,
        scenario,
        model.prompt.prompt_embeds,
        model.prompt.pooled_prompt_embeds,
        device=model.device,
        call_contexts=call_contexts,
        pixels=pixels,
        clock=clock,
    )
