"""Which layers of the FLUX transformer a component touches, in one place: the block linears the
FP8 backends quantize, the AdaLN modulation linears some of them keep, and the attention modules
the attention kernels serve."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

# The repeated blocks: what FP8 quantizes and regional compile traces. Embedders (before them) and
# the output projection (after them) stay in full precision: they are tiny and most sensitive.
BLOCK_PREFIXES = ("transformer_blocks.", "single_transformer_blocks.")


def in_blocks(name: str) -> bool:
    """Whether the module named `name` (relative to the transformer) lies inside a repeated block."""
    return name.startswith(BLOCK_PREFIXES)


def quantizable_block_linear(module: torch.nn.Module, name: str) -> bool:
    """Linear layers inside the transformer blocks whose dims suit FP8 tensor cores (multiples of 16).
    The signature is torchao's `filter_fn`."""
    return (
        isinstance(module, torch.nn.Linear)
        and in_blocks(name)
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    )


def is_modulation(name: str) -> bool:
    """The AdaLN modulation linears (`norm1.linear`, `norm1_context.linear`, `norm.linear`): they see
    one row per image (the time embedding), so they are a negligible share of the FLOPs."""
    return name.rpartition(".")[0].split(".")[-1].startswith("norm")


def block_linears(root: torch.nn.Module, keep: Callable[[str], bool] = lambda name: False
                  ) -> list[tuple[str, torch.nn.Linear]]:
    """(name, linear) of every quantizable block linear of `root`, but those `keep` names."""
    return [(name, module) for name, module in root.named_modules()
            if quantizable_block_linear(module, name) and not keep(name)]


def replace_linears(root: torch.nn.Module, make: Callable[[torch.nn.Linear], torch.nn.Module],
                    keep: Callable[[str], bool] = lambda name: False) -> int:
    """Swap every quantizable block linear of `root` (but those `keep` names) for `make(linear)`;
    returns the count."""
    targets = block_linears(root, keep)
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name), child, make(linear))
    return len(targets)


def attention_modules(transformer: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The attention modules whose processor dispatches through diffusers' backend registry."""
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            yield module
