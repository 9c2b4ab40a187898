"""The AdaLN modulation of every step, computed once per generation before the first step.

FLUX's blocks turn one vector per step (the time, guidance and pooled-prompt embedding) into
their shift/scale/gate through 77 modulation linears holding about 3.2 B parameters. Each step
reads all of them to multiply one row: memory-bound work that depends only on the timestep and
the prompt. At the first step of a generation this component runs those linears once on every
step's embedding (one GEMM of `steps` rows per linear, the weights read once), keeps the table,
and before each step copies that step's row into a buffer the blocks read instead of calling
the linear. Exact in math; the batched GEMM may round differently from the per-step one.

The copy runs in a forward pre-hook of the transformer, outside compiled regions and outside the
captured CUDA graph (which reads the buffer's memory); the step comes from the scheduler
(`step_index` is None before a generation's first step).
"""

from __future__ import annotations

import torch

from .base import Component, Phase


class PrecomputedModulation(torch.nn.Module):
    """Stands in for a modulation linear: returns this step's row of its precomputed output."""

    def __init__(self, inner: torch.nn.Module, row: torch.Tensor):
        super().__init__()
        self.inner = inner  # kept as a child: the table is computed with it (quantized or not)
        self.register_buffer("row", row, persistent=False)  # a view of the stack's one flat buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:  # the table holds one embedding per step: batch 1, as the suite runs
            raise RuntimeError(f"precompute-modulation serves batch 1; got a batch of {x.shape[0]}")
        return self.row


def modulation_linears(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, linear) of every AdaLN modulation linear: the blocks' norms and the output norm,
    whatever an FP8 backend made of them (a quantized Linear, a ScaledMMLinear)."""
    from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero, AdaLayerNormZeroSingle

    kinds = (AdaLayerNormZero, AdaLayerNormZeroSingle, AdaLayerNormContinuous)
    found = [(f"{name}.linear", module.linear) for name, module in transformer.named_modules()
             if isinstance(module, kinds)]
    for name, linear in found:
        if not isinstance(getattr(linear, "out_features", None), int):
            raise RuntimeError(f"precompute-modulation: {name} is a {type(linear).__name__} without out_features")
    return found


class PrecomputeModulation(Component):
    name = "precompute-modulation"
    summary = "AdaLN modulation of all steps computed once per generation (weights read once, not every step)"
    phase = Phase.CACHE  # after quantization (the table uses the quantized linears), before compile
    lossless = True

    def __init__(self, param=None):
        super().__init__(param)
        self.wrappers: list[PrecomputedModulation] = []
        self.flat: torch.Tensor | None = None  # this step's rows, every linear side by side
        self.table: torch.Tensor | None = None  # (steps, flat width)
        self.hook = None
        self.tables_built = 0

    def apply(self, pipe) -> None:
        transformer = pipe.transformer
        linears = modulation_linears(transformer)
        if not linears:
            raise RuntimeError("precompute-modulation found no AdaLN modulation linear in the transformer")
        width = sum(linear.out_features for _, linear in linears)
        self.flat = torch.zeros(width, dtype=transformer.dtype, device=transformer.device)
        offset = 0
        for name, linear in linears:
            row = self.flat[offset:offset + linear.out_features].view(1, -1)
            parent, _, child = name.rpartition(".")
            wrapper = PrecomputedModulation(linear, row)
            setattr(transformer.get_submodule(parent), child, wrapper)
            self.wrappers.append(wrapper)
            offset += linear.out_features

        def before_step(module, args, kwargs):
            index = pipe.scheduler.step_index
            if index is None or self.table is None:
                self._build_table(module, kwargs, pipe.scheduler)
            self.flat.copy_(self.table[index or 0])

        self.hook = transformer.register_forward_pre_hook(before_step, with_kwargs=True)

    @torch.no_grad()
    def _build_table(self, transformer, kwargs: dict, scheduler) -> None:
        """Every step's modulation, from the embeddings the transformer would compute at each step
        (the same dtype casts as FluxTransformer2DModel.forward and the pipeline)."""
        hidden, timestep = kwargs["hidden_states"], kwargs["timestep"]
        steps = scheduler.timesteps.to(device=timestep.device, dtype=timestep.dtype) / 1000  # as the pipeline passes t
        times = steps.to(hidden.dtype) * 1000
        pooled = kwargs["pooled_projections"].expand(len(times), -1)
        guidance = kwargs.get("guidance")
        if guidance is None:
            temb = transformer.time_text_embed(times, pooled)
        else:
            temb = transformer.time_text_embed(times, (guidance.to(hidden.dtype) * 1000).expand(len(times)), pooled)
        activated = torch.nn.functional.silu(temb).to(hidden.dtype)
        self.table = torch.cat([wrapper.inner(activated) for wrapper in self.wrappers], dim=1)
        self.tables_built += 1

    def report(self) -> dict:
        width = None if self.flat is None else int(self.flat.numel())
        return {"modulation_linears": len(self.wrappers), "outputs_per_step": width, "tables_built": self.tables_built}

    def reset_report(self) -> None:
        self.tables_built = 0

    def release(self, pipe) -> None:
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
        self.table = None
