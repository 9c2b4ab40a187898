"""rope-halves and split-proj-out on the tiny model: each computes what FLUX computes (they only
reorder exact arithmetic), each really changed the model (a layout it forgot to follow gives another
output), and regional compile still makes one graph per block class."""

import numpy as np
import pytest
import torch

from flux_perf.components import make_component
from flux_perf.components.flux_processor import flux_processor_class
from flux_perf.components.rope_halves import halves_order, rope_in_halves
from flux_perf.components.split_proj_out import SPLIT_BLOCK
from flux_perf.components.stacks import StackError, parse_stack
from flux_perf.model.generate import generate_with
from flux_perf.model.scenarios import Scenario

SCENARIO = Scenario(64, 64, 3)


def _relative(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def randomize_qk_norms(transformer) -> None:
    """The synthetic and tiny weights set every RMSNorm weight to 1, where a missing or wrong permutation
    of those weights cannot show: give Q/K's norms weights of their own."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, module in transformer.named_modules():
            if name.rpartition(".")[2] in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)


def _apply(model, text):
    stack = parse_stack(text)
    stack.apply(model.pipe)
    return stack


def test_rope_in_halves_rotates_as_interleaved_pairs_do():
    from diffusers.models.embeddings import apply_rotary_emb

    x = torch.randn(1, 5, 2, 8, dtype=torch.float64)
    angles = torch.rand(5, 4, dtype=torch.float64) * 6
    freqs = (angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1))
    order = halves_order(8)
    assert order.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    interleaved = apply_rotary_emb(x, freqs, sequence_dim=1)
    halves = apply_rotary_emb(x[..., order], rope_in_halves(freqs), use_real_unbind_dim=-2, sequence_dim=1)
    torch.testing.assert_close(halves, interleaved[..., order])


@pytest.mark.parametrize("stack", ["rope-halves", "fused-qkv+rope-halves", "rope-halves+fused-qkv"])
def test_rope_halves_gives_fluxs_output(tiny_model, stack):
    transformer = tiny_model.pipe.transformer
    randomize_qk_norms(transformer)
    reference = generate_with(tiny_model, SCENARIO)
    before = transformer.transformer_blocks[0].attn.norm_q.weight.detach().clone()
    applied = _apply(tiny_model, stack)
    halves = generate_with(tiny_model, SCENARIO)
    assert _relative(halves.latents, reference.latents) < 1e-4
    attention = transformer.transformer_blocks[0].attn
    assert isinstance(attention.processor, flux_processor_class()) and attention.processor.rope_halves
    order = halves_order(attention.head_dim)
    torch.testing.assert_close(attention.norm_q.weight, before[order])
    # Without the rotation in halves the permuted weights give another output: the layout is used.
    for module in transformer.modules():
        if hasattr(module, "processor") and hasattr(module.processor, "rope_halves"):
            module.processor.rope_halves = False
    applied.release(tiny_model.pipe)  # and the (cos, sin) back to interleaved
    assert not transformer.pos_embed._forward_hooks
    broken = generate_with(tiny_model, SCENARIO)
    assert _relative(broken.latents, reference.latents) > 1e-3


def test_split_proj_out_gives_fluxs_output_and_frees_the_joint_weight(tiny_model):
    reference = generate_with(tiny_model, SCENARIO)
    transformer = tiny_model.pipe.transformer
    _apply(tiny_model, "split-proj-out")
    split = generate_with(tiny_model, SCENARIO)
    assert _relative(split.latents, reference.latents) < 1e-4
    blocks = transformer.single_transformer_blocks
    assert all(type(b).__name__ == SPLIT_BLOCK and not hasattr(b, "proj_out") for b in blocks)
    assert SPLIT_BLOCK in transformer._repeated_blocks
    # The halves are the joint weight's columns: zero the MLP half and the output moves.
    with torch.no_grad():
        blocks[0].proj_out_mlp.weight.zero_()
    assert _relative(generate_with(tiny_model, SCENARIO).latents, reference.latents) > 1e-3


def test_split_proj_out_is_refused_beside_first_block_cache():
    with pytest.raises(StackError, match="split-proj-out cannot be combined with fbc"):
        parse_stack("split-proj-out+fbc")


def test_split_proj_out_refuses_a_model_whose_single_blocks_it_does_not_know(tiny_model):
    tiny_model.pipe.transformer.single_transformer_blocks[0].__class__ = torch.nn.Module
    with pytest.raises(RuntimeError, match="split-proj-out: Module is not FLUX's single block"):
        make_component("split-proj-out").apply(tiny_model.pipe)


def test_both_compile_one_graph_per_block_class(tiny_source, monkeypatch):
    from torch._dynamo.utils import counters

    from flux_perf.components.compile import RegionalCompile
    from flux_perf.instrument.runner import CaseRunner

    inductor_kwargs = RegionalCompile.compile_kwargs  # dynamo's graphs, without inductor's C++ builds
    monkeypatch.setattr(RegionalCompile, "compile_kwargs", lambda self: {**inductor_kwargs(self), "backend": "eager"})
    runner = CaseRunner(tiny_source, "cpu")
    graphs = {}
    for stack in ("compile-regional", "rope-halves+split-proj-out+compile-regional"):
        counters.clear()
        case = runner.case(parse_stack(stack), Scenario(64, 64, 2))
        case.round()
        graphs[stack] = counters["stats"]["unique_graphs"]
        if "split" in stack:
            blocks = case.prepared.model.pipe.transformer.single_transformer_blocks
            assert all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
        runner.release()
    assert graphs["rope-halves+split-proj-out+compile-regional"] == graphs["compile-regional"], graphs
