"""Physical-limit accounting: FLOPs of a transformer step and the measured matmul ceilings."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepFlops:
    linear: float
    attention: float

    @property
    def total(self) -> float:
        return self.linear + self.attention


def step_flops_breakdown(config: dict, image_tokens: int, text_tokens: int) -> StepFlops:
    """FLOPs of one FluxTransformer2DModel forward (one denoising step, batch 1).

    `image_tokens` counts every image-stream token (latent + Kontext reference);
    linear layers cost 2 x weights x tokens, attention 4 x S^2 x inner per layer
    (QK^T and PV) over S = text + image tokens.
    """
    inner = config["num_attention_heads"] * config["attention_head_dim"]  # FLUX's MLPs are 4 x inner wide
    double, single = config["num_layers"], config["num_single_layers"]
    seq = image_tokens + text_tokens
    # Per token, each stream of a double block: qkv (3), out (1), MLP up and down (4+4): 12 inner^2.
    # A single block per token: qkv (3), proj_mlp (4), proj_out over [attn, mlp] (5): 12 inner^2.
    per_token = 12 * inner * inner * (double + single)
    patch_out = config["patch_size"] ** 2 * (config.get("out_channels") or config["in_channels"])
    embedders = image_tokens * (config["in_channels"] + patch_out) * inner + text_tokens * config["joint_attention_dim"] * inner
    # AdaLN modulation runs once per sample, not per token: 6 inner^2 per stream (double), 3 (single).
    modulation = (2 * 6 * double + 3 * single + 2) * inner * inner
    linear = 2.0 * (per_token * seq + embedders + modulation)
    attention = 4.0 * seq * seq * inner * (double + single)
    return StepFlops(linear=linear, attention=attention)


# Dense tensor-core peaks from NVIDIA's datasheets (TFLOP/s, without sparsity), keyed by NVML's name and
# spelled as the measured ceilings (MatmulPeaks.to_dict):
# the floor a step cannot beat at its precision. A GPU not listed gets the measured ceilings only.
DATASHEET_DENSE_TFLOPS = {
    "NVIDIA H100 80GB HBM3": {"bf16_tflops": 989.4, "fp8_tflops": 1978.9},  # H100 SXM5
    "NVIDIA H200": {"bf16_tflops": 989.4, "fp8_tflops": 1978.9},
}


def step_floor_ms(flops: dict, linear_tflops: float | None, attention_tflops: float | None) -> float | None:
    """The shortest a step could take if its linear layers and its attention each ran at the
    given throughput and nothing else took time (milliseconds); None without both."""
    if not linear_tflops or not attention_tflops or not flops:
        return None
    return (flops.get("linear", 0.0) / linear_tflops + flops.get("attention", 0.0) / attention_tflops) / 1e9


def transformer_step_flops(config: dict, image_tokens: int, text_tokens: int) -> float:
    return step_flops_breakdown(config, image_tokens, text_tokens).total


def scenario_tokens(height: int, width: int, vae_scale_factor: int, with_reference: bool = True) -> int:
    """Image-stream tokens: 2x2 latent patches, doubled by the Kontext reference image."""
    latent = (height // (vae_scale_factor * 2)) * (width // (vae_scale_factor * 2))
    return latent * (2 if with_reference else 1)


@dataclass(frozen=True)
class MatmulPeaks:
    bf16_tflops: float | None
    fp8_tflops: float | None
    size: int

    def to_dict(self) -> dict:
        return {"bf16_tflops": self.bf16_tflops, "fp8_tflops": self.fp8_tflops, "matmul_size": self.size}


def cuda_ms(fn, repeats: int = 20, calls: int = 1, warmup_s: float = 1.0) -> list[float]:
    """Per-call milliseconds of `fn` on the GPU: CUDA events around `calls` calls, `repeats` times.
    Warmed up by time, not count: an idle H100 needs a while to reach its boost clock (three
    1.4 ms products measured 540 instead of 760 TFLOP/s)."""
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        fn()
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / calls)
    return times


def measure_matmul_peaks(device: str = "cuda", size: int = 8192) -> MatmulPeaks:
    """bf16 and fp8 (e4m3, torch._scaled_mm) matmul throughput on random data, median of 20."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return MatmulPeaks(None, None, size)
    flops = 2.0 * size**3
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    bf16 = flops / (statistics.median(cuda_ms(lambda: torch.mm(a, b))) * 1e-3) / 1e12
    fp8 = None
    if torch.cuda.get_device_capability(device) >= (8, 9):
        a8 = a.to(torch.float8_e4m3fn)
        b8 = b.t().contiguous().to(torch.float8_e4m3fn).t()  # column-major second operand
        one = torch.ones((), device=device)
        fp8_ms = statistics.median(cuda_ms(lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one,
                                                                     out_dtype=torch.bfloat16, use_fast_accum=True)))
        fp8 = flops / (fp8_ms * 1e-3) / 1e12
    return MatmulPeaks(round(bf16, 1), None if fp8 is None else round(fp8, 1), size)
