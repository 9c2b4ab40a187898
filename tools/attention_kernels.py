"""Attention kernels alone on the H100, at FLUX.1-Kontext's shapes (24 heads x 128, batch 1):
cuDNN bf16 SDPA, cuDNN FP8 (the suite's `attn-fp8` kernel), FlashAttention-3 bf16 and FP8 (the
`fa3-fwd` wheel's `fa3_fwd_interface`). Each kernel is timed on inputs already in its precision
(quantization is the caller's fused work), error against an fp32 reference.

    python3 tools/attention_kernels.py --json OUT.json [--tokens 2560,5120,8704]

A kernel that cannot load or run is recorded with its exact error, not skipped silently.
"""

from __future__ import annotations

import argparse
import json
import statistics
import traceback

import torch
import torch.nn.functional as F

from flux_perf.instrument.flops import cuda_ms

HEADS, HEAD_DIM = 24, 128


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


def kernels(q, k, v):
    """name -> callable returning (batch, tokens, heads, dim) output; built lazily so one failing
    import only loses its own rows."""
    from flux_perf.components.attention_fp8 import SOFTMAX_SCALE, quantize_e4m3

    scale = HEAD_DIM ** -0.5
    (q8, dq), (k8, dk), (v8, dv) = (quantize_e4m3(t) for t in (q, k, v))

    def cudnn_bf16():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                  v.transpose(1, 2)).transpose(1, 2)

    def cudnn_fp8():  # FP8 output, as the suite runs it; dequantized for the error only
        import flux_perf.components.attention_fp8  # noqa: F401  (registers the op)

        return torch.ops.flux_perf.cudnn_sdpa_fp8(q8, k8, v8, dq, dk, dv, 1.0 / dv, scale, SOFTMAX_SCALE)

    def fa3_bf16():
        from fa3_fwd_interface import flash_attn_func

        return flash_attn_func(q, k, v, softmax_scale=scale)

    fa3_descales = [d.reshape(1, 1).expand(1, HEADS).contiguous() for d in (dq, dk, dv)]

    def fa3_fp8():  # bf16 output
        from fa3_fwd_interface import flash_attn_func

        return flash_attn_func(q8, k8, v8, softmax_scale=scale, q_descale=fa3_descales[0],
                               k_descale=fa3_descales[1], v_descale=fa3_descales[2])

    dequantize = {"cudnn-fp8": lambda o: o.float() * dv.reshape(())}
    return {"cudnn-bf16": cudnn_bf16, "cudnn-fp8": cudnn_fp8, "fa3-bf16": fa3_bf16, "fa3-fp8": fa3_fp8}, dequantize


def measure(tokens: int) -> list[dict]:
    generator = torch.Generator(device="cuda").manual_seed(tokens)
    q, k, v = (torch.randn(1, tokens, HEADS, HEAD_DIM, device="cuda", generator=generator, dtype=torch.bfloat16)
               for _ in range(3))
    ref = F.scaled_dot_product_attention(q.float().transpose(1, 2), k.float().transpose(1, 2),
                                         v.float().transpose(1, 2)).transpose(1, 2)
    flop = 4 * tokens * tokens * HEAD_DIM * HEADS
    table, dequantize = kernels(q, k, v)
    rows = []
    for name, fn in table.items():
        row = {"tokens": tokens, "kernel": name}
        try:
            with torch.no_grad():
                out = fn()
                out = out[0] if isinstance(out, (tuple, list)) else out
                row["relative_error"] = relative_error(dequantize.get(name, lambda o: o)(out), ref)
                times = cuda_ms(fn, repeats=7, calls=40)
            row.update(ms_median=statistics.median(times), ms_min=min(times), ms=times,
                       tflops=flop / (statistics.median(times) * 1e-3) / 1e12)
        except Exception as error:  # recorded with its text: the finding, when a kernel cannot run
            row["error"] = f"{type(error).__name__}: {error}"
            row["traceback"] = traceback.format_exc(limit=6)
        print(json.dumps({k: v for k, v in row.items() if k not in ("ms", "traceback")}), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="2560,5120,8704")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    found = {}
    try:
        import fa3_fwd_config
        import fa3_fwd_interface  # noqa: F401

        found["fa3_fwd"] = {"build_flags": fa3_fwd_config.CONFIG.get("build_flags")}
    except Exception as error:
        found["fa3_fwd"] = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(found), flush=True)
    rows = [row for tokens in args.tokens.split(",") for row in measure(int(tokens))]
    result = {"command": "python3 tools/attention_kernels.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
              "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "packages": found, "rows": rows}
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
