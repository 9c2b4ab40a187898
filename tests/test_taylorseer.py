"""taylorseer on the tiny model: after the first full steps, every second step runs no block and its
output is extrapolated; the output moves, but little; each generation starts from an empty cache."""

import numpy as np
import pytest

from flux_perf.components import ComponentError, make_component
from flux_perf.components.stacks import parse_stack
from flux_perf.model.generate import generate_with
from flux_perf.model.pipeline import load_model
from flux_perf.model.scenarios import Scenario

SCENARIO = Scenario(64, 64, 8)


def test_steps_between_full_ones_run_no_block_and_stay_close(tiny_model):
    reference = generate_with(tiny_model, SCENARIO)
    stack = parse_stack("taylorseer")
    stack.apply(tiny_model.pipe)
    block_runs = []
    tiny_model.pipe.transformer.transformer_blocks[0].attn.register_forward_hook(
        lambda module, args, out: block_runs.append(1))
    cached = generate_with(tiny_model, SCENARIO, stack.call_contexts(tiny_model.pipe))
    report = stack.report()["taylorseer"]
    # full steps 0, 1, 2, then one of every two: 3, 5 and 7 extrapolated
    assert (report["steps_seen"], report["steps_extrapolated"]) == (8, 3)
    assert len(block_runs) == 5
    moved = np.linalg.norm(cached.latents - reference.latents) / np.linalg.norm(reference.latents)
    assert 0 < moved < 0.2, moved
    again = generate_with(tiny_model, SCENARIO, stack.call_contexts(tiny_model.pipe))
    np.testing.assert_array_equal(again.latents, cached.latents)  # the cache starts empty every generation


@pytest.mark.parametrize("param", ["0", "1", "x", "1.5", "11", "\u00b2"])
def test_a_bad_interval_names_the_value(param):
    with pytest.raises(ComponentError, match=f"taylorseer:{param}: parameter must be a whole number"):
        make_component(f"taylorseer:{param}")


def test_it_never_runs_under_cuda_graphs_or_whole_graph_compile_or_beside_another_cache():
    with pytest.raises(ComponentError, match="cuda-graphs cannot be combined with taylorseer"):
        parse_stack("compile-regional+cuda-graphs+taylorseer")
    with pytest.raises(ComponentError, match="taylorseer cannot be combined with compile-full"):
        parse_stack("compile-full+taylorseer")
    with pytest.raises(ComponentError, match="two step cache components, fbc and taylorseer"):
        parse_stack("fbc+taylorseer")
    names = [c.name for c in parse_stack("fast+taylorseer").components]
    assert "taylorseer" in names and "cuda-graphs" not in names
    assert set(names) - {"taylorseer"} == {c.name for c in parse_stack("fast").components} - {"cuda-graphs"}


def test_compiled_blocks_compile_once_not_once_per_full_step(tiny_source, monkeypatch):
    """The state update reads the step counter; traced into a compiled block it made dynamo compile
    the block again at every full step, past its recompile limit, after which the blocks ran eager."""
    from diffusers.hooks.taylorseer_cache import TaylorSeerState
    from torch._dynamo.utils import counters

    from flux_perf.components.compile import RegionalCompile
    from flux_perf.instrument.runner import CaseRunner

    inductor_kwargs = RegionalCompile.compile_kwargs  # dynamo's graphs, without inductor's C++ builds
    monkeypatch.setattr(RegionalCompile, "compile_kwargs", lambda self: {**inductor_kwargs(self), "backend": "eager"})
    update = TaylorSeerState.update
    runner = CaseRunner(tiny_source, "cpu")
    graphs = {}
    for stack in ("compile-regional", "compile-regional+taylorseer"):
        counters.clear()
        case = runner.case(parse_stack(stack), SCENARIO)
        case.round()
        case.round()
        graphs[stack] = counters["stats"]["unique_graphs"]
        runner.release()
    assert graphs["compile-regional+taylorseer"] == graphs["compile-regional"], graphs
    assert TaylorSeerState.update is update, "released: diffusers' own update is back"
    first, second = make_component("taylorseer"), make_component("taylorseer")
    for component in (first, second):  # two stacks applied before either is released
        component.apply(load_model(tiny_source, "cpu").pipe)
    for component in (first, second):
        component.release(None)
    assert TaylorSeerState.update is update, "whatever the order, diffusers' own update is back"
