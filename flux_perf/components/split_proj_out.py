"""The single blocks' output projection split in two, so that no concatenation is made.

FLUX's single block projects cat([attention output, GELU(MLP)]) with one linear. Under
torch.compile the GELU, the cat and (in `fast`) the FP8 cast fuse into one kernel that computes each
element's source with integer division and modulo over all 15360 columns; it ran at about 2.5x its
memory-bound time, the largest of `fast`'s cast kernels (docs/fast-stack.md). proj_out(cat([a, m]))
is proj_attn(a) + proj_mlp(m) with the weight's columns split: two GEMMs over the same total K, each
input made by a plain pointwise kernel, the sum fused into the gate and residual add that follow.
Exact in real arithmetic; in FP8 each half gets its own calibrated scale.
"""

from __future__ import annotations

import functools

import torch

from .base import Component, Phase

SPLIT_BLOCK = "SplitOutputSingleBlock"


@functools.cache
def split_block_class():
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock

    class SplitOutputSingleBlock(FluxSingleTransformerBlock):
        """diffusers 0.42's FluxSingleTransformerBlock.forward, with proj_out as two linears."""

        def forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None,
                    joint_attention_kwargs=None):
            text_seq_len = encoder_hidden_states.shape[1]
            hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
            residual = hidden_states
            norm_hidden_states, gate = self.norm(hidden_states, emb=temb)
            mlp_hidden_states = self.act_mlp(self.proj_mlp(norm_hidden_states))
            attn_output = self.attn(hidden_states=norm_hidden_states, image_rotary_emb=image_rotary_emb,
                                    **(joint_attention_kwargs or {}))
            projected = self.proj_out_attn(attn_output) + self.proj_out_mlp(mlp_hidden_states)
            hidden_states = residual + gate.unsqueeze(1) * projected
            if hidden_states.dtype == torch.float16:
                hidden_states = hidden_states.clip(-65504, 65504)
            return hidden_states[:, :text_seq_len], hidden_states[:, text_seq_len:]

    SplitOutputSingleBlock.__name__ = SplitOutputSingleBlock.__qualname__ = SPLIT_BLOCK
    return SplitOutputSingleBlock


def _column_part(linear: torch.nn.Linear, start: int, stop: int, bias: bool) -> torch.nn.Linear:
    part = torch.nn.Linear(stop - start, linear.out_features, bias=bias, device=linear.weight.device,
                           dtype=linear.weight.dtype)
    with torch.no_grad():
        part.weight.copy_(linear.weight[:, start:stop])
        if bias:
            part.bias.copy_(linear.bias)
    return part


class SplitProjOut(Component):
    name = "split-proj-out"
    summary = ("single blocks' proj_out split into an attention part and an MLP part, so the cat of their "
               "inputs is never made (exact in real arithmetic)")
    phase = Phase.FUSION  # before quantization: each half becomes its own FP8 linear with its own scale
    lossless = True
    # First Block Cache finds FLUX's blocks in diffusers' registry by their exact class, not a subclass.
    conflicts_with = frozenset({"fbc"})

    def __init__(self, param: str | None = None):
        super().__init__(param)
        self.blocks = 0

    def apply(self, pipe) -> None:
        transformer = pipe.transformer
        block_class = split_block_class()
        flux_block = block_class.__mro__[1]
        for block in transformer.single_transformer_blocks:
            if type(block) is not flux_block:
                raise RuntimeError(f"{self.name}: {type(block).__name__} is not FLUX's single block")
            dim = block.proj_out.out_features
            block.proj_out_attn = _column_part(block.proj_out, 0, dim, bias=block.proj_out.bias is not None)
            block.proj_out_mlp = _column_part(block.proj_out, dim, block.proj_out.in_features, bias=False)
            del block.proj_out
            block.__class__ = block_class
            self.blocks += 1
        if not self.blocks:
            raise RuntimeError(f"{self.name} found no single transformer block to split")
        # Regional compile finds repeated blocks by class name: this model's single blocks now have another.
        repeated = tuple(getattr(transformer, "_repeated_blocks", ()) or ())
        if SPLIT_BLOCK not in repeated:
            transformer._repeated_blocks = (*repeated, SPLIT_BLOCK)

    def report(self) -> dict:
        return {"split_blocks": self.blocks}
