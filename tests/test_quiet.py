"""A new user's first run (issue 29, item 12): no library import chatter on stderr, without
hiding anything else those libraries say; the README installs what CI installs."""

import enum
import logging
import re
import subprocess
import sys
from pathlib import Path

from flux_perf.quiet import NOTICES, _DropNotice, quiet_library_notices

ROOT = Path(__file__).resolve().parents[1]
# What the libraries printed on every command before (torchao 0.17, torch 2.13, diffusers 0.42,
# transformers 5 on a CPU machine without torchvision).
CHATTER = re.compile(r"Failed to load \S*torchao|_C_mxfp8|_C_cutlass|is an Enum subclass and is now natively"
                     r"|Unable to import `torchao` Tensor objects|requires torchvision \(not installed\)")


def test_a_command_prints_no_library_import_chatter():
    """`flux-perf stacks` as the console script runs it (the CLI module first), with the FLUX
    pipeline's imports too, which pull in torchao, diffusers and transformers' image processors."""
    script = ("import sys; from flux_perf.cli import main; from diffusers import FluxKontextPipeline; "
              "sys.exit(main(['stacks']))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "bf16" in result.stdout, result.stderr[-3000:]
    assert not CHATTER.findall(result.stderr), result.stderr


class _TorchaoEnum(enum.Enum):
    A = 1


_TorchaoEnum.__module__ = "torchao.quantization.quantize_.common.kernel_preference"


class _OtherEnum(enum.Enum):
    A = 1


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.name, record.getMessage()))


def test_only_those_notices_are_dropped_every_other_warning_shows():
    quiet_library_notices()
    quiet_library_notices()  # once is enough; again adds nothing
    for name in NOTICES:
        assert sum(isinstance(f, _DropNotice) for f in logging.getLogger(name).filters) == 1
    dropped = [
        ("torchao", "Failed to load /sp/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load this library"),
        ("torch.utils._pytree", "%s is an Enum subclass and is now natively supported by torch.compile", _TorchaoEnum),
        ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import `torchao` Tensor objects. This may affect"),
        ("transformers.utils.import_utils", "`CLIPImageProcessor` requires torchvision (not installed); falling back to "
                                            "`CLIPImageProcessorPil` for backward compatibility."),
        ("diffusers.models.modeling_utils", "Attention backends are an experimental feature and the API may be "
                                            "subject to change."),
    ]
    shown = [
        ("torchao", "Failed to load /sp/other_package/kernels.so: undefined symbol"),
        ("torchao", "Float8 config: unsupported dtype"),
        ("torchao.kernel.intmm", "Warning: Detected no triton, on systems without Triton certain kernels will not work"),
        ("torch.utils._pytree", "%s is an Enum subclass and is now natively supported by torch.compile", _OtherEnum),
        ("diffusers.quantizers.torchao.torchao_quantizer", "torchao version too old"),
        ("transformers.utils.import_utils", "`AutoModel` requires the PyTorch library but it was not found"),
        ("diffusers", "Unable to import `torchao` Tensor objects."),  # another logger: not ours to drop
        ("diffusers.models.modeling_utils", "`attention_backend` 'flash' is not available"),
    ]
    # A handler on each logger itself: torch, diffusers and transformers do not propagate to the root.
    collect = _Collect()
    loggers = [logging.getLogger(name) for name in dict.fromkeys(name for name, *_ in dropped + shown)]
    for logger in loggers:
        logger.addHandler(collect)
    try:
        for name, message, *args in dropped + shown:
            logging.getLogger(name).warning(message, *args)
    finally:
        for logger in loggers:
            logger.removeHandler(collect)
    # (a child's record also reaches its parent's handler: count each once)
    assert list(dict.fromkeys(collect.records)) == [
        (name, message % tuple(args) if args else message) for name, message, *args in shown]


def _install_line(text: str) -> str:
    return next(line.strip().removeprefix("run: ") for line in text.splitlines() if "pip install" in line)


def test_the_readmes_install_line_is_cpu_torch_as_in_ci():
    """README's set-up line is the CPU workflow's: the CPU wheel index (a plain `pip install torch`
    on Linux fetches the CUDA build, several GB)."""
    readme = _install_line((ROOT / "README.md").read_text())
    assert readme == _install_line((ROOT / ".github/workflows/cpu.yml").read_text())
    assert "--extra-index-url https://download.pytorch.org/whl/cpu torch==" in readme
