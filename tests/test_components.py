"""The component registry, stack parsing, conflicts and requirements, and every component
that can run on a CPU applied for real to the tiny pipeline."""

import re

import numpy as np
import pytest
import torch

from flux_perf.components import (
    REGISTRY,
    Capabilities,
    Component,
    ComponentError,
    Phase,
    UnknownComponentError,
    make_component,
)
from flux_perf.model.prompt_tokens import resolve_prompt_tokens
from flux_perf.gate.images import compare_images
from flux_perf.model.generate import generate_with
from flux_perf.model.scenarios import Scenario
from flux_perf.components.stacks import NAMED_STACKS, StackError, parse_stack, parse_stacks

CPU = Capabilities("cpu")
SM80 = Capabilities("cuda", (8, 0), "NVIDIA A100", 1)
SM90 = Capabilities("cuda", (9, 0), "NVIDIA H100 80GB HBM3", 1)
SCENARIO = Scenario(64, 64, 2)


def test_registry_is_complete_and_consistent():
    assert len(REGISTRY) >= 25
    for name, cls in REGISTRY.items():
        assert cls.name == name and cls.summary
    assert not set(NAMED_STACKS) & set(REGISTRY), "a stack name must never shadow a component"


def test_components_say_how_they_run_the_linears_and_which_are_test_only():
    fp8_linears = {name for name, cls in REGISTRY.items() if cls.linear_precision == "fp8"}
    assert fp8_linears == {"fp8-torchao", "fp8-static", "fp8-scaled-mm", "fp8-te"}
    assert all(cls.linear_precision is None for name, cls in REGISTRY.items() if name not in fp8_linears)
    assert REGISTRY["attn-fp8"].linear_precision is None, "FP8 attention leaves the linears in bf16"
    # The planted breaks and instruments say so in their summary; nothing else does.
    planted = {name for name, cls in REGISTRY.items() if cls.summary.startswith("test-only")}
    assert planted == {name for name, cls in REGISTRY.items() if cls.test_only} == {"noise", "slowdown", "wrong-shift"}


def test_every_fp8_backend_quantizes_the_same_block_linears(tiny_model, tiny_source):
    """One selection (components/layers.py): the torchao backends and fp8-scaled-mm touch the same
    linears, those of the repeated blocks with dims in multiples of 16, never an embedder or proj_out."""
    pytest.importorskip("torchao.prototype.quantization.quant_api")
    from flux_perf.model.pipeline import load_model

    expected = {name for name, module in tiny_model.pipe.transformer.named_modules()
                if isinstance(module, torch.nn.Linear) and name.startswith(("transformer_blocks.", "single_"))
                and module.in_features % 16 == 0 and module.out_features % 16 == 0}

    def quantized(pipe, spec, kind):
        make_component(spec).apply(pipe)
        return {name for name, module in pipe.transformer.named_modules() if type(module).__name__ == kind}

    assert expected and quantized(tiny_model.pipe, "fp8-static", "Float8ObservedLinear") == expected
    assert quantized(load_model(tiny_source, "cpu").pipe, "fp8-scaled-mm", "ScaledMMLinear") == expected


def test_unknown_component_lists_the_known_ones():
    with pytest.raises(UnknownComponentError, match="unknown component 'warp-drive'.*attn-cudnn"):
        make_component("warp-drive")
    with pytest.raises(StackError, match="unknown stack or component 'fp9'.*named stacks: bf16"):
        parse_stack("fp9")


def test_stacks_are_canonical_in_phase_order():
    assert parse_stack("bf16").components == ()
    assert parse_stack("compile-regional+fp8-torchao").key == parse_stack("fp8-torchao+compile-regional").key
    assert parse_stack("fp8").key == "attn-cudnn+fp8-torchao+compile-regional"
    assert parse_stack("compile+fp8-torchao").key == parse_stack("fp8").key  # named stacks expand
    assert parse_stack("fused-qkv+fused-qkv").key == "fused-qkv"
    assert [s.name for s in parse_stacks(None)] == ["bf16", "compile", "fp8", "fast"]
    assert [s.name for s in parse_stacks("bf16, fast+fbc")] == ["bf16", "fast+fbc"]


@pytest.mark.parametrize("text, message", [
    # An unset `--stacks "$STACKS"` once meant every default stack: a re-record of them all.
    ("", "no stack in ''"), (" , ", "no stack in ' , '"),
    # One build timed as two cases would count one measurement twice.
    ("bf16,bf16", "stack 'bf16' is named twice in 'bf16,bf16'"),
    ("compile,attn-cudnn+compile-regional", "stack 'attn-cudnn+compile-regional' is the same stack as 'compile'"),
])
def test_a_stack_list_naming_none_or_one_twice_is_refused(text, message):
    with pytest.raises(StackError, match=re.escape(message)):
        parse_stacks(text)


@pytest.mark.parametrize("text, message", [
    ("attn-cudnn+attn-flash-sdpa", "two attention components"),
    ("fp8-torchao+fp8-scaled-mm", "two linear quantizer components, fp8-torchao and fp8-scaled-mm"),
    ("fp8-static+fp8-te", "two linear quantizer components"),
    ("compile-regional+cuda-graphs+fbc", "cuda-graphs cannot be combined with fbc"),
    ("compile-full:max-autotune+cuda-graphs", "compile-full:max-autotune cannot be combined with cuda-graphs"),
    ("compile-full+fbc", "fbc cannot be combined with compile-full"),
    ("model-cpu-offload+compile-regional", "model-cpu-offload cannot be combined"),
    ("fast+fbc:0.2", "cuda-graphs cannot be combined with fbc"),
])
def test_conflicting_stacks_are_refused(text, message):
    with pytest.raises(StackError, match=message):
        parse_stack(text)


@pytest.mark.parametrize("spec, message", [
    ("fbc:lots", "must be a number"),
    ("fbc:99", r"must be in \[0.0, 10.0\]"),
    ("steps:0", "positive integer"),
    ("compile-regional:turbo", "unknown option"),
    ("compile-regional:reduce-overhead", "cannot capture repeated blocks.*max-autotune-no-cudagraphs"),
    ("fused-qkv:2", "takes no parameter"),
    ("cp:ulysses1", "N >= 2"),
])
def test_bad_parameters_name_the_value(spec, message):
    with pytest.raises(ComponentError, match=message):
        make_component(spec)


def test_requirements_give_reasons(monkeypatch):
    assert "needs a CUDA GPU" in make_component("attn-cudnn").unmet(CPU)
    assert make_component("attn-cudnn").unmet(SM80) is None
    assert "compute capability >= 8.9; NVIDIA A100 has 8.0" in make_component("fp8-scaled-mm").unmet(SM80)
    assert make_component("fp8-scaled-mm").unmet(SM90) is None
    monkeypatch.setattr(Capabilities, "has_package", staticmethod(lambda name: name != "transformer_engine"))
    assert "transformer_engine, not installed" in make_component("fp8-te").unmet(SM90)
    assert "needs 2 GPUs, 1 visible" in make_component("cp:ulysses2").unmet(SM90)
    two_gpus = Capabilities("cuda", (9, 0), "H100", 2, world_size=1)
    assert "torchrun --nproc-per-node 2" in make_component("cp:ulysses2").unmet(two_gpus)


def test_dpm_solver_cannot_drive_the_kontext_pipeline():
    """Why there is no dpm-solver (docs/components.md); fails once diffusers lets it, to revisit."""
    from diffusers import DPMSolverMultistepScheduler
    from diffusers.pipelines.flux.pipeline_flux_kontext import retrieve_timesteps

    assert "dpm-solver" not in REGISTRY and make_component("unipc").unmet(CPU) is None
    dpm = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
                                      use_dynamic_shifting=True, time_shift_type="exponential")
    with pytest.raises(ValueError, match="does not support custom sigmas"):
        retrieve_timesteps(dpm, 4, "cpu", sigmas=np.linspace(1.0, 0.25, 4), mu=0.8)  # as the pipeline calls it


def test_unipc_applies_fluxs_dynamic_shift(tiny_model):
    """UniPC's sigmas equal FLUX's Euler ones for the same sigmas and mu: the shift is applied, not ignored."""
    euler = tiny_model.pipe.scheduler
    make_component("unipc").apply(tiny_model.pipe)
    unipc = tiny_model.pipe.scheduler
    sigmas = np.linspace(1.0, 1 / 6, 6)
    for mu in (0.5, 1.15):
        euler.set_timesteps(sigmas=sigmas, mu=mu)
        unipc.set_timesteps(sigmas=sigmas, mu=mu)
        assert np.allclose(unipc.sigmas.numpy(), euler.sigmas.numpy(), atol=1e-5)
    assert unipc.sigmas[3] > sigmas[3] + 0.2  # mu = 1.15 shifts the mid-schedule sigmas up


def test_attention_slicing_does_not_exist_for_flux(tiny_model):
    """Why there is no attention-slicing (docs/components.md); fails once diffusers gains it, to revisit."""
    from diffusers import FluxTransformer2DModel

    assert "attention-slicing" not in REGISTRY
    transformer = tiny_model.pipe.transformer
    before = {name: type(p) for name, p in transformer.attn_processors.items()}
    tiny_model.pipe.enable_attention_slicing()  # finds no module with set_attention_slice: a no-op
    assert {name: type(p) for name, p in transformer.attn_processors.items()} == before
    assert not hasattr(FluxTransformer2DModel, "set_attention_slice")
    assert not hasattr(FluxTransformer2DModel, "enable_forward_chunking")
    with pytest.raises(AttributeError, match="_get_compatible_processor"):  # no sliced Flux processor
        transformer.transformer_blocks[0].attn.set_attention_slice(1)


CPU_RUNNABLE = sorted(name for name, cls in REGISTRY.items() if cls().unmet(CPU) is None)


@pytest.fixture(scope="module")
def reference_image(tiny_source):
    from flux_perf.model.pipeline import load_model

    return generate_with(load_model(tiny_source, "cpu"), SCENARIO).image


def test_cpu_runnable_set_is_what_we_expect():
    expected = {"attn-sdpa", "fused-qkv", "compile-regional", "compile-full", "inductor-tuning", "tf32", "fbc",
                "steps", "guidance", "unipc", "wrong-shift", "vae-channels-last", "vae-compile", "vae-tiling",
                "slowdown", "fp8-static"}
    assert expected <= set(CPU_RUNNABLE)


def _check_attention_backend(pipe, stack):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    assert _AttentionBackendRegistry._active_backend.value == type(stack.components[0]).backend


def _check_tf32(pipe, stack):
    (context,) = stack.call_contexts(pipe)
    with context():
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32, "TF32 must be switched on only around each generation"


def _check_fused_qkv(pipe, stack):
    attn = pipe.transformer.transformer_blocks[0].attn
    assert attn.fused_projections and not hasattr(attn, "to_q"), "unfused copies must be freed"


# Each component's proof that it was applied, not just accepted: one check per component that runs
# on a CPU. A component without an entry fails `test_every_cpu_component_has_an_effect_check`.
EFFECT_CHECKS = {
    "attn-sdpa": _check_attention_backend,
    "fused-qkv": _check_fused_qkv,
    "rope-halves": lambda pipe, stack: pipe.transformer.transformer_blocks[0].attn.processor.rope_halves,
    "split-proj-out": lambda pipe, stack: not hasattr(pipe.transformer.single_transformer_blocks[0], "proj_out"),
    "compile-regional": lambda pipe, stack: pipe.transformer.transformer_blocks[0]._compiled_call_impl is not None,
    "compile-full": lambda pipe, stack: pipe.transformer._compiled_call_impl is not None,
    "vae-compile": lambda pipe, stack: pipe.vae.decoder._compiled_call_impl is not None,
    "vae-channels-last": lambda pipe, stack: (
        pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        and not pipe.vae.decoder.conv_in.weight.is_contiguous()),
    "vae-tiling": lambda pipe, stack: pipe.vae.use_tiling,
    "unipc": lambda pipe, stack: type(pipe.scheduler).__name__ == "UniPCMultistepScheduler",
    "wrong-shift": lambda pipe, stack: not pipe.scheduler.config.use_dynamic_shifting,
    "fbc": lambda pipe, stack: stack.report()["fbc"]["steps_seen"] >= 2 * SCENARIO.steps,
    "taylorseer": lambda pipe, stack: stack.report()["taylorseer"]["steps_seen"] >= 2 * SCENARIO.steps,
    "slowdown": lambda pipe, stack: stack.report()["slowdown"]["rows"] >= 16,
    "noise": lambda pipe, stack: stack.report()["noise"]["steps_seen"] >= SCENARIO.steps,
    # The tiny model has only 16 text tokens, so nothing to shorten here: this checks the rounding
    # (a 200-token prompt encodes to 256); the shortening itself is tested in test_checkpoint.py.
    "text-tokens": lambda pipe, stack: resolve_prompt_tokens(stack.prompt_tokens(), 200) == 256,
    "inductor-tuning": lambda pipe, stack: "coordinate_descent_tuning" in stack.report()["inductor-tuning"]["applied"],
    "steps": lambda pipe, stack: stack.adjust(SCENARIO).steps == 4,
    "guidance": lambda pipe, stack: stack.adjust(SCENARIO).guidance != SCENARIO.guidance,
    "tf32": _check_tf32,
    "precompute-modulation": lambda pipe, stack: (
        type(pipe.transformer.transformer_blocks[0].norm1.linear).__name__ == "PrecomputedModulation"
        and stack.report()["precompute-modulation"]["tables_built"] >= 2),
    "fp8-static": lambda pipe, stack: (
        type(pipe.transformer.transformer_blocks[0].ff.net[2].weight).__name__ == "PrototypeFloat8Tensor"
        and stack.report()["fp8-static:64x64@2-s1"]["calibrated_linears"] > 0),
}


def test_every_cpu_component_has_an_effect_check():
    missing = sorted(set(CPU_RUNNABLE) - set(EFFECT_CHECKS))
    assert not missing, f"components without a check of their effect on the tiny pipeline: {missing}"


# Parameters that keep a component's own work small on the tiny model (a calibration at 64x64).
TINY_SPECS = {"fp8-static": "fp8-static:64x64@2-s1"}


@pytest.mark.parametrize("name", CPU_RUNNABLE)
def test_component_really_applies_on_the_tiny_pipeline(name, tiny_model, reference_image):
    stack = parse_stack(TINY_SPECS.get(name, name))
    stack.apply(tiny_model.pipe, calibrate=lambda scenario, contexts: generate_with(tiny_model, scenario, contexts))
    scenario = stack.adjust(SCENARIO)
    contexts = stack.call_contexts(tiny_model.pipe)
    generate_with(tiny_model, scenario, contexts)  # warm-up (compiles, calibrates)
    result = generate_with(tiny_model, scenario, contexts)
    assert result.image.shape == (64, 64, 3) and result.image.std() > 1.0
    assert len(result.times.step_ms) == scenario.steps
    if stack.lossless:
        assert compare_images(reference_image, result.image).ssim > 0.999, f"{name} changed the image"
    check = EFFECT_CHECKS.get(name)
    assert check is not None, f"{name}: no effect check (add one to EFFECT_CHECKS)"
    assert check(tiny_model.pipe, stack) is not False, f"{name} was accepted but left no trace on the pipeline"


def test_components_register_themselves_and_test_doubles_do_not():
    class Probe(Component, register=False):
        name = "probe"
        summary = "test only"

    assert "probe" not in REGISTRY and REGISTRY["fp8-torchao"].phase is Phase.QUANTIZATION
    assert all(isinstance(cls.phase, Phase) for cls in REGISTRY.values())
    Probe().apply(None)  # the base apply does nothing: components that only wrap calls need no override
    with pytest.raises(ComponentError, match="two components named 'fused-qkv'"):
        type("Twin", (Component,), {"name": "fused-qkv", "summary": "a second one"})


def test_stack_resets_diffusers_global_attention_backend(tiny_source):
    """diffusers keeps the last backend set on any model process-wide; a new stack must not inherit it."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    from flux_perf.model.pipeline import load_model

    load_model(tiny_source, "cpu").pipe.transformer.set_attention_backend("_native_math")
    parse_stack("fused-qkv").apply(load_model(tiny_source, "cpu").pipe)
    assert _AttentionBackendRegistry._active_backend.value == "native"


def test_wrong_shift_really_changes_the_schedule(tiny_model):
    before = tiny_model.pipe.scheduler.config.use_dynamic_shifting
    parse_stack("wrong-shift").apply(tiny_model.pipe)
    assert before and not tiny_model.pipe.scheduler.config.use_dynamic_shifting
    assert np.isclose(tiny_model.pipe.scheduler.config.shift, 1.0)
