"""`flux-perf account TRACE`: where the time of a denoising step goes, from a torch.profiler trace
of the suite's own `--flux-profile`: GPU time per kernel family, the idle gaps between kernels
(launch and host stalls), and, for the GEMMs and attention, the throughput reached against the
measured matmul ceiling.

Kernels are sorted into families by name (cuBLAS/cuBLASLt/CUTLASS GEMMs, cuDNN and flash
attention, inductor's Triton kernels by the ops fused into them); a kernel no rule names is
"other" and listed among the largest, so a new kernel never hides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path


def _rules(*pairs: tuple[str, str]) -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in pairs)


# Library kernels (cuBLAS/cuBLASLt/CUTLASS, cuDNN, flash, ATen): first match wins, so the order
# matters (an FP8 GEMM is a GEMM).
LIBRARY_FAMILIES = _rules(
    ("attention", r"sdpa|fmha|flash|attention|attn"),
    ("fp8 gemm", r"e4m3|e5m2|fp8|f8f6f4|scaled_mm|_qq"),
    ("gemm", r"gemm|nvjet|xmma|cutlass|matmul|cublas|splitk"),
    ("activation quantization", r"amax|quant|float8|to_fp8|reciprocal_clamp"),
    ("norms", r"layer_norm|rms_norm|group_norm|native_norm|_norm_"),
    ("activations", r"gelu|silu|tanh|sigmoid"),
    ("copies", r"memcpy|memset|copy|cat_|catarray|transpose|permute|contiguous"),
    ("elementwise (RoPE, modulation, residuals)", r"elementwise|vectorized|reduce"),
)
# Inductor's Triton kernels are named after every op fused into them, including the GEMM or
# attention they feed (`triton_red_fused__scaled_mm_..._amax_..._gelu`), so those names never make
# one a GEMM or attention: only its templates (`triton_tem_`, max-autotune) are matmuls. A kernel
# that quantizes counts as quantization even when a norm or activation is fused into it: without
# the quantization that work would ride along in another kernel.
TRITON_FAMILIES = _rules(
    ("fp8 gemm", r"^triton_tem_.*(scaled_mm|fp8|e4m3)"),
    ("gemm", r"^triton_tem_"),
    ("activation quantization", r"amax|clamp|float8|fp8"),
    ("norms", r"layer_norm|rms_norm|group_norm"),
    ("activations", r"gelu|silu|tanh|sigmoid"),
    ("elementwise (RoPE, modulation, residuals)", r"."),
)
FP8_KERNEL = re.compile(r"_f8_|fp8|e4m3", re.IGNORECASE)  # cuDNN's FP8 attention: ..._wgmma_f8_knob_...
FAMILY_NAMES = tuple(dict.fromkeys(name for name, _ in LIBRARY_FAMILIES + TRITON_FAMILIES))
GAPS = "idle between kernels (launch, host)"


class AccountError(ValueError):
    pass


@dataclass
class Family:
    name: str
    us: float = 0.0
    kernels: int = 0


@dataclass
class Account:
    window_us: float  # the denoising range(s) on the GPU, or the kernels' span without one
    windowed: bool  # found the suite's "denoise" range in the trace
    steps: int
    families: dict[str, Family]
    gaps_us: float
    largest: list[tuple[str, float, int]] = field(default_factory=list)  # name, us, count
    flops: dict | None = None  # per step: linear, attention
    ceilings: dict | None = None  # TFLOP/s: bf16, fp8
    fp8_attention_us: float = 0.0  # attention kernels that compute in FP8 (judged against the fp8 ceiling)
    datasheet: dict | None = None  # TFLOP/s: bf16_tflops, fp8_tflops dense peaks of this GPU model

    def precisions(self) -> tuple[str, str]:
        """(linear, attention) precision the step mostly ran in: "fp8" or "bf16"."""
        linear = "fp8" if self.families["fp8 gemm"].us > self.families["gemm"].us else "bf16"
        attention = "fp8" if self.fp8_attention_us > self.families["attention"].us / 2 else "bf16"
        return linear, attention

    def floors_ms(self) -> dict[str, float]:
        """Per step, at the step's own precisions: the datasheet's dense peak floor, and the floor
        at this run's measured matmul ceilings (what a perfect GEMM of this machine reaches)."""
        from ..instrument.flops import step_floor_ms

        linear, attention = self.precisions()
        floors = {}
        for name, table in (("datasheet peak", self.datasheet), ("measured ceiling", self.ceilings)):
            floor = step_floor_ms(self.flops, *((table or {}).get(f"{p}_tflops") for p in (linear, attention)))
            if floor:
                floors[name] = floor
        return floors

    def per_step_ms(self, us: float) -> float:
        return us / 1000.0 / self.steps

    def reached(self, family: str) -> tuple[float, float] | None:
        """(TFLOP/s, % of the ceiling) of a GEMM family or attention, when FLOPs are known."""
        if not self.flops or not self.ceilings:
            return None
        linear, attention = self.precisions()  # the floors judge the step at the same precisions
        if family == "attention":
            time_us = self.families[family].us
            flops, ceiling = self.flops.get("attention"), self.ceilings.get(f"{attention}_tflops")
        elif family in ("gemm", "fp8 gemm"):
            # The linear layers' FLOPs ran in both GEMM families together (FP8 stacks keep a few bf16).
            flops = self.flops.get("linear")
            time_us = self.families["gemm"].us + self.families["fp8 gemm"].us
            if family != ("fp8 gemm" if linear == "fp8" else "gemm"):
                return None  # shown once, on the family that carries most of the linear layers
            ceiling = self.ceilings.get(f"{linear}_tflops")
        else:
            return None
        if not flops or not ceiling or not time_us:
            return None
        tflops = flops * self.steps / (time_us * 1e-6) / 1e12
        return tflops, 100 * tflops / ceiling


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def family_of(kernel: str) -> str:
    for name, pattern in TRITON_FAMILIES if kernel.startswith("triton_") else LIBRARY_FAMILIES:
        if pattern.search(kernel):
            return name
    return "other"


def account(trace: dict, steps: int = 1, flops: dict | None = None, ceilings: dict | None = None,
            datasheet: dict | None = None) -> Account:
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    if not isinstance(events, list):
        raise AccountError("not a chrome trace: no traceEvents list (write one with --flux-profile)")
    kernels = [e for e in events if isinstance(e, dict) and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
               and isinstance(e.get("dur"), (int, float)) and isinstance(e.get("ts"), (int, float))]
    if not kernels:
        raise AccountError("the trace holds no GPU kernels: it was recorded without CUDA (a CPU run has none)")
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in events if isinstance(e, dict)
               and e.get("cat") == "gpu_user_annotation" and e.get("name") == "denoise"]
    windowed = bool(windows)
    if not windowed:
        windows = [(min(k["ts"] for k in kernels), max(k["ts"] + k["dur"] for k in kernels))]
    inside = []
    for k in kernels:
        start, stop = k["ts"], k["ts"] + k["dur"]
        clipped = [(max(start, a), min(stop, b)) for a, b in windows if start < b and stop > a]
        if clipped:
            inside.append((k["name"], clipped))
    families = {name: Family(name) for name in FAMILY_NAMES}
    families["other"] = Family("other")
    by_name: dict[str, list[float]] = {}
    fp8_attention_us = 0.0
    for name, parts in inside:
        us = sum(b - a for a, b in parts)
        family = families[family_of(name)]
        family.us += us
        if family.name == "attention" and FP8_KERNEL.search(name):
            fp8_attention_us += us
        family.kernels += 1
        entry = by_name.setdefault(name, [0.0, 0])
        entry[0] += us
        entry[1] += 1
    window_us = sum(b - a for a, b in windows)
    busy = _union_us([part for _, parts in inside for part in parts])
    largest = sorted(((n, v[0], int(v[1])) for n, v in by_name.items()), key=lambda x: -x[1])[:12]
    return Account(window_us, windowed, max(1, steps), families, max(0.0, window_us - busy), largest, flops, ceilings,
                   fp8_attention_us, datasheet)


@dataclass(frozen=True)
class TraceContext:
    """What the run's results.json says of the traced case."""

    source: str
    steps: int = 1
    flops: dict | None = None
    ceilings: dict | None = None  # measured matmul TFLOP/s
    datasheet: dict | None = None  # this GPU model's dense peaks


def load_context(trace_path: Path, results_path: Path | None) -> TraceContext:
    """Steps, FLOPs per step, ceilings and peaks of the traced case, from the run's results.json
    (by default the one of the report folder the trace was written into)."""
    from ..instrument.flops import DATASHEET_DENSE_TFLOPS

    results_path = results_path or trace_path.parent.parent / "results.json"
    case_id = trace_path.stem
    if not results_path.is_file():
        return TraceContext(f"no {results_path}: times are per denoising range, without FLOPs")
    from .records import read_results

    results = read_results(results_path)
    record = next((r for r in results.records if r.id == case_id), None)
    if record is None:
        return TraceContext(f"{results_path} has no case {case_id!r}: times are per denoising range")
    machine = results.machine or {}
    return TraceContext(f"case {case_id} of {results_path}", (record.effective_scenario or record.scenario).get("steps", 1),
                        record.flops_per_step, machine.get("matmul_peaks"),
                        DATASHEET_DENSE_TFLOPS.get(machine.get("gpu_name") or ""))


def format_account(result: Account, source: str) -> str:
    step = result.per_step_ms(result.window_us)
    where = "the denoising range" if result.windowed else "the span of all kernels (no denoise range found)"
    lines = [f"{source}: {result.steps} steps, {step:.2f} ms per step over {where}", "",
             f"{'family':<42} {'ms/step':>8} {'share':>6} {'kernels/step':>13}  reached"]
    rows = [(f.name, f.us, f.kernels) for f in result.families.values() if f.us > 0]
    rows.append((GAPS, result.gaps_us, 0))
    for name, us, count in sorted(rows, key=lambda r: -r[1]):
        reached = result.reached(name)
        shown = f"{reached[0]:.0f} TFLOP/s, {reached[1]:.0f} % of the ceiling" if reached else ""
        per_step = f"{count / result.steps:.0f}" if count else "-"
        lines.append(f"{name:<42} {result.per_step_ms(us):>8.2f} {100 * us / result.window_us:>5.1f}% "
                     f"{per_step:>13}  {shown}")
    lines += _floor_lines(result, step)
    lines += ["", "largest kernels (ms per step, calls per step, family):"]
    for name, us, count in result.largest:
        lines.append(f"  {result.per_step_ms(us):7.2f}  {count / result.steps:5.0f}  {family_of(name):<24} {name[:90]}")
    return "\n".join(lines)


def _floor_lines(result: Account, step_ms: float) -> list[str]:
    floors = result.floors_ms()
    if not floors:
        return []
    linear, attention = result.precisions()
    lines = ["", f"against the floor (linear layers in {linear}, attention in {attention}; nothing else costs time):"]
    for name, floor in floors.items():
        lines.append(f"  {name:<17} {floor:7.2f} ms per step: this step takes {step_ms / floor:.2f}x it")
    return lines


def account_to_json(result: Account, source: str) -> dict:
    return {"source": source, "steps": result.steps, "ms_per_step": result.per_step_ms(result.window_us),
            "windowed": result.windowed,
            "families": {f.name: {"ms_per_step": result.per_step_ms(f.us), "kernels": f.kernels,
                                  "reached": result.reached(f.name)} for f in result.families.values() if f.us},
            "gaps_ms_per_step": result.per_step_ms(result.gaps_us),
            "floors_ms_per_step": result.floors_ms(), "precisions": dict(zip(("linear", "attention"), result.precisions())),
            "largest": [{"name": n, "ms_per_step": result.per_step_ms(us), "calls": c} for n, us, c in result.largest]}


def read_trace(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AccountError(f"{path}: cannot read a chrome trace ({type(error).__name__}: {error})") from None
