"""The attention kernels the suite serves itself (FP8 cuDNN, FlashAttention-3 and -4), against PyTorch's
cuDNN bf16 SDPA at FLUX's shapes (24 heads x 128; 2560 tokens at 512x512 with its reference image
and 512 text tokens, 8704 at 1024x1024). Each test asserts accuracy; the kernel times, measured
with CUDA events, go to <report dir>/kernels.json so a change's predicted gain has a source."""

import json
import statistics

import pytest
import torch
import torch.nn.functional as F

from flux_perf.components import Capabilities
from flux_perf.instrument.flops import cuda_ms

pytestmark = pytest.mark.h100

TOKENS = (2560, 8704)
# FP8 e4m3 (3 mantissa bits) on Q, K, V and the output: a few per cent. Measured on random inputs,
# where no token dominates; bf16 kernels agree to ~3e-3.
FP8_MAX_RELATIVE_ERROR = 0.08
BF16_MAX_RELATIVE_ERROR = 0.01


def _needs(package: str):
    caps = Capabilities.detect()
    if caps.device != "cuda" or (caps.capability or (0, 0)) < (9, 0):
        pytest.skip(f"needs a Hopper GPU (this machine: {caps.gpu_name or caps.device})")
    if not caps.has_package(package):
        pytest.skip(f"needs the Python package {package}, not installed here")


def _inputs(tokens: int):
    generator = torch.Generator("cuda").manual_seed(tokens)
    return [torch.randn(1, tokens, 24, 128, device="cuda", dtype=torch.bfloat16, generator=generator)
            for _ in range(3)]


def _cudnn_bf16(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def _ms(fn, *args) -> float:
    return statistics.median(cuda_ms(lambda: fn(*args), repeats=5, calls=10, warmup_s=0.5))


def _relative(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _record(flux_session, name: str, entry: dict) -> None:
    path = flux_session.config.report_dir / "kernels.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


@pytest.mark.parametrize("tokens", TOKENS)
def test_fp8_attention_is_close_to_bf16(tokens, flux_session):
    _needs("cudnn")
    from flux_perf.components.attention_fp8 import fp8_attention

    q, k, v = _inputs(tokens)
    reference = _cudnn_bf16(q, k, v)
    fused = torch.compile(fp8_attention, fullgraph=True)  # the quantization fused, as in a compiled stack
    error = _relative(fused(q, k, v), reference)
    torch._dynamo.reset()
    _record(flux_session, f"attn-fp8-{tokens}", {
        "tokens": tokens, "relative_error_vs_cudnn_bf16": error,
        "cudnn_bf16_ms": _ms(_cudnn_bf16, q, k, v),
        "fp8_with_compiled_quantization_ms": _ms(fused, q, k, v),
        "fp8_eager_quantization_ms": _ms(fp8_attention, q, k, v),
    })
    assert error < FP8_MAX_RELATIVE_ERROR, f"FP8 attention moved {error:.3%} from cuDNN bf16 at {tokens} tokens"


@pytest.mark.parametrize("tokens", TOKENS)
def test_fa4_matches_cudnn_bf16(tokens, flux_session):
    _needs("flash_attn.cute")
    from flux_perf.components.flash_attn4 import fa4_dispatch

    q, k, v = _inputs(tokens)
    error = _relative(fa4_dispatch(q, k, v), _cudnn_bf16(q, k, v))
    _record(flux_session, f"attn-fa4-{tokens}", {
        "tokens": tokens, "relative_error_vs_cudnn_bf16": error,
        "cudnn_bf16_ms": _ms(_cudnn_bf16, q, k, v), "fa4_ms": _ms(fa4_dispatch, q, k, v),
    })
    assert error < BF16_MAX_RELATIVE_ERROR, f"FA4 differs {error:.3%} from cuDNN bf16 at {tokens} tokens"


@pytest.mark.parametrize("tokens", TOKENS)
def test_fa3_matches_cudnn_bf16(tokens, flux_session):
    from flux_perf.components.flash_attn3 import fa3_dispatch, installed_module

    _needs(installed_module() or "fa3_fwd_interface")
    q, k, v = _inputs(tokens)
    error = _relative(fa3_dispatch(q, k, v), _cudnn_bf16(q, k, v))
    _record(flux_session, f"attn-fa3-{tokens}", {
        "tokens": tokens, "module": installed_module(), "relative_error_vs_cudnn_bf16": error,
        "cudnn_bf16_ms": _ms(_cudnn_bf16, q, k, v), "fa3_ms": _ms(fa3_dispatch, q, k, v),
    })
    assert error < BF16_MAX_RELATIVE_ERROR, f"FA3 differs {error:.3%} from cuDNN bf16 at {tokens} tokens"
