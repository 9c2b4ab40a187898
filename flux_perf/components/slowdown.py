"""Test-only planted slow-down: real extra GPU work before every transformer step, sized to
a fraction of the step's own measured time, to prove the latency gate catches a regression
that small.

Sizing by time, not FLOPs: a plain matmul runs nearer the chip's peak than a whole step does,
so "5 % of the step's FLOPs" would cost only ~3 % of its time. The second call of each input
shape (the first may compile or capture; both are warm-up, never timed rounds) measures the
step and the extra matmul, with a synchronisation; after that the hook only launches work.
"""

from __future__ import annotations

import torch

from ..model.clocks import clock_for
from .base import Component, Phase, parse_float_param

# Large enough (~0.5 ms on an H100) that launch latency does not inflate the probe.
_PROBE_ROWS = 16384


def _rows_for(extra_ms: float, probe_ms: float) -> int:
    """Rows of the extra matmul that take `extra_ms`, from the probe's time for _PROBE_ROWS rows."""
    return max(16, int(extra_ms / probe_ms * _PROBE_ROWS) // 16 * 16)


class Slowdown(Component):
    name = "slowdown"
    summary = "test-only: extra matmul work worth FRACTION of each step's time (e.g. slowdown:0.05)"
    phase = Phase.INSTRUMENT
    lossless = True  # the extra work writes only to its own buffer
    test_only = True
    default_param = "0.05"

    def __init__(self, param=None):
        super().__init__(param)
        self.rows: dict[tuple, int] = {}  # input shape -> rows of extra matmul per step
        self.buffers: dict[int, tuple] = {}  # rows -> the matmul's operands and output, on the GPU
        self.calibration: dict[str, float] = {}

    def validate_param(self) -> None:
        parse_float_param(self, 0.0, 10.0)

    def _operands(self, rows: int, width: int, device, dtype):
        if rows not in self.buffers:
            generator = torch.Generator(device=device).manual_seed(0)
            a = torch.randn(rows, width, device=device, dtype=dtype, generator=generator)
            b = torch.randn(width, width, device=device, dtype=dtype, generator=generator)
            self.buffers[rows] = (a, b, torch.empty(rows, width, device=device, dtype=dtype))
        return self.buffers[rows]

    def apply(self, pipe) -> None:
        transformer = pipe.transformer
        config = dict(transformer.config)
        width = min(4096, config["num_attention_heads"] * config["attention_head_dim"])
        dtype = next(transformer.parameters()).dtype
        pending: dict[tuple, tuple] = {}
        calls: dict[tuple, int] = {}

        def key_of(args, kwargs) -> tuple:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            return tuple(hidden.shape), hidden.device

        def before(_module, args, kwargs):
            key = key_of(args, kwargs)
            device = key[1]
            if key not in self.rows:
                calls[key] = calls.get(key, 0) + 1
                if calls[key] == 2:  # the first call may include compilation or graph capture
                    clock = clock_for(device)
                    pending[key] = (clock, clock.mark())
                return
            a, b, sink = self._operands(self.rows[key], width, device, dtype)
            torch.mm(a, b, out=sink)  # written to a kept buffer so no compiler can drop it

        def after(_module, args, kwargs, _output):
            key = key_of(args, kwargs)
            if key not in pending:
                return
            clock, start = pending.pop(key)

            def elapsed_ms(since) -> float:
                end = clock.mark()
                clock.settle()  # calibration is warm-up: a synchronisation is allowed here
                return clock.elapsed_ms(since, end)

            step_ms = elapsed_ms(start)
            a, b, sink = self._operands(_PROBE_ROWS, width, key[1], dtype)
            torch.mm(a, b, out=sink)  # once to warm up the kernel
            probes = []
            for _ in range(5):
                probe_start = clock.mark()
                torch.mm(a, b, out=sink)
                probes.append(elapsed_ms(probe_start))
            probe_ms = sorted(probes)[len(probes) // 2]
            self.rows[key] = _rows_for(float(self.param) * step_ms, probe_ms)
            self.calibration = {"step_ms": step_ms, "probe_ms": probe_ms, "width": width, "sized_to": "step",
                                **self._extra(self.rows[key], probe_ms)}

        transformer.register_forward_pre_hook(before, with_kwargs=True)
        transformer.register_forward_hook(after, with_kwargs=True)

    @staticmethod
    def _extra(rows: int, probe_ms: float) -> dict:
        return {"rows": rows, "extra_ms_per_step": probe_ms * rows / _PROBE_ROWS}

    def size_to_round(self, round_ms: float, steps: int) -> None:
        """Re-size the extra work to the fraction of a whole warm round (`round_ms`, measured with
        the current plant in it), not of the transformer steps alone: at 512 the steps are about
        four fifths of a round, so a per-step 2 % read 1.6-1.9 % end to end."""
        if not self.rows or "probe_ms" not in self.calibration:
            raise RuntimeError("slowdown: size_to_round needs a warm call first (the plant measures a step then)")
        probe_ms = self.calibration["probe_ms"]
        # The plant added at most its fraction of the unslowed round (the steps are part of the round):
        # a probe timed in a burst of host load can claim more, and a round less than nothing.
        unslowed_ms = max(round_ms - steps * self.calibration["extra_ms_per_step"],
                          round_ms / (1 + float(self.param)))
        rows = _rows_for(float(self.param) * unslowed_ms / steps, probe_ms)
        self.rows = dict.fromkeys(self.rows, rows)
        self.calibration.update(sized_to="round", round_ms=unslowed_ms, **self._extra(rows, probe_ms))

    def report(self) -> dict:
        return {"fraction": float(self.param), **self.calibration}

    def release(self, pipe) -> None:
        self.buffers.clear()  # ~300 MB at full width: the probe's operands and output

