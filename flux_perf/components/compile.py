"""torch.compile of the transformer: regional (repeated blocks, the default) or whole graph,
plus the guide's inductor settings and TF32 switches as their own components."""

from __future__ import annotations

import contextlib

import torch

from .base import Component, ComponentError, Phase, parse_choice_param

MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")
# Modes whose inductor output replays CUDA graphs itself.
GRAPH_MODES = ("max-autotune", "reduce-overhead")


class _Compile(Component):
    exclusive = "compile"
    phase = Phase.COMPILE
    lossless = True
    default_param = "default"

    def validate_param(self) -> None:
        parse_choice_param(self, MODES)

    def compile_kwargs(self) -> dict:
        # Static shapes: every scenario compiles its own graph instead of one slow dynamic
        # graph (measured: a 1024 graph reused at 512 recompiled dynamic and lost 60 %).
        kwargs = {"fullgraph": True, "dynamic": False}
        if self.param != "default":
            kwargs["mode"] = self.param
        return kwargs


class RegionalCompile(_Compile):
    name = "compile-regional"
    summary = "regional torch.compile of the repeated transformer blocks (compile_repeated_blocks)"

    def validate_param(self) -> None:
        super().validate_param()
        if self.param in GRAPH_MODES:
            # Every repeated block replays the same inductor CUDA graph, so each replay overwrites
            # the outputs of the block before it (max-autotune failed so on the H100 at both scenarios).
            raise ComponentError(
                f"compile-regional:{self.param}: inductor's CUDA graphs cannot capture repeated blocks "
                "(each block's replay overwrites the previous block's outputs: 'accessing tensor output of "
                "CUDAGraphs that has been overwritten by a subsequent run'); use "
                "compile-regional:max-autotune-no-cudagraphs+cuda-graphs instead"
            )

    def apply(self, pipe) -> None:
        kwargs = self.compile_kwargs()
        if pipe.transformer.is_cache_enabled:
            # First Block Cache decides on the host inside the leader block: that block needs a
            # graph break there, everything else still compiles into whole-block graphs.
            kwargs["fullgraph"] = False
        pipe.transformer.compile_repeated_blocks(**kwargs)


class FullGraphCompile(_Compile):
    name = "compile-full"
    summary = "torch.compile of the whole transformer as one graph (long compile)"
    tags = frozenset({"whole-model-compile"})
    # First Block Cache decides on the host between blocks: the graph must break there. Our own
    # CUDA-graph capture is refused too: the inductor graph modes capture graphs themselves.
    conflicts_with = frozenset({"fbc", "cuda-graphs"})

    def apply(self, pipe) -> None:
        pipe.transformer.compile(**self.compile_kwargs())


# The guide's inductor settings (seed-guide.md, "H100-Specific Compilation Settings") that
# are not the compile mode's job. Those missing from the installed torch are reported.
GUIDE_INDUCTOR_SETTINGS = {
    "conv_1x1_as_mm": True,
    "coordinate_descent_tuning": True,
    "coordinate_descent_check_all_directions": True,
    "epilogue_fusion": True,
    "aggressive_fusion": True,
    "force_fuse_int_mm_with_mul": True,
    "use_mixed_mm": True,
    "search_autotune_cache": True,
}


def _has_setting(config, dotted: str) -> bool:
    obj = config
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


class InductorTuning(Component):
    name = "inductor-tuning"
    summary = "the guide's inductor settings (coordinate-descent tuning, 1x1 conv as mm, ...)"
    phase = Phase.COMPILER_SETTINGS
    lossless = True

    def __init__(self, param=None):
        super().__init__(param)
        import torch._inductor.config as inductor_config

        self.applied = {k: v for k, v in GUIDE_INDUCTOR_SETTINGS.items() if _has_setting(inductor_config, k)}
        self.missing = sorted(set(GUIDE_INDUCTOR_SETTINGS) - set(self.applied))

    def extra_unmet(self, caps):
        return None if self.applied else "none of the guide's inductor settings exist in this torch"


    def call_context(self, pipe):
        import torch._inductor.config as inductor_config

        return lambda: inductor_config.patch(self.applied)

    def report(self) -> dict:
        return {"applied": sorted(self.applied), "not_in_this_torch": self.missing}


class TF32(Component):
    name = "tf32"
    summary = "TF32 for fp32 matmuls and convolutions (no effect on bf16 weights)"
    phase = Phase.NUMERICS
    lossless = False  # fp32 work is computed in TF32


    def call_context(self, pipe):
        @contextlib.contextmanager
        def tf32():
            matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn

        return tf32

