"""Library import notices that say nothing about a flux-perf run, kept off stderr.

Each filter drops one message of one logger, matched on its text; every other record of that
logger, and every other logger, passes untouched. Installed by the entry points (cli.py, the
pytest plugin once asked for, the A/B worker) before torch, torchao, diffusers or transformers
are imported: the libraries log most of these while being imported, the last on every stack built.
"""

from __future__ import annotations

import logging
import re


def _torchao_optional_kernels(record: logging.LogRecord) -> bool:
    # torchao's prebuilt C++ kernels (mxfp8, cutlass sm90a) for another Python or GPU: the suite
    # calls none of them (its FP8 goes through torch._scaled_mm).
    return re.match(r"Failed to load \S*torchao[/\\]_C\w*\S*\.so: ", record.getMessage()) is not None


def _torchao_enum_deprecation(record: logging.LogRecord) -> bool:
    # torch tells torchao to stop registering its Enums as pytree constants: torchao's to fix.
    args = record.args if isinstance(record.args, tuple) else ()
    return (str(record.msg).startswith("%s is an Enum subclass and is now natively supported")
            and bool(args) and getattr(args[0], "__module__", "").startswith("torchao"))


def _diffusers_torchao_serialization(record: logging.LogRecord) -> bool:
    # Concerns only checkpoints serialized with torchao, which the suite never loads.
    return str(record.msg).startswith("Unable to import `torchao` Tensor objects.")


def _transformers_pil_fallback(record: logging.LogRecord) -> bool:
    # FLUX's pipeline module imports CLIP/Siglip image processors it never uses here; without
    # torchvision transformers falls back to the PIL ones and says so.
    return "requires torchvision (not installed); falling back to `" in str(record.msg)


def _diffusers_attention_backend_api(record: logging.LogRecord) -> bool:
    # Said on every set_attention_backend call, so once per stack built: a note on diffusers' API
    # stability for its callers (the attention components pin the version they were written for).
    return str(record.msg).startswith("Attention backends are an experimental feature")


# logger name -> the one notice dropped from it
NOTICES = {
    "torchao": _torchao_optional_kernels,
    "torch.utils._pytree": _torchao_enum_deprecation,
    "diffusers.quantizers.torchao.torchao_quantizer": _diffusers_torchao_serialization,
    "transformers.utils.import_utils": _transformers_pil_fallback,
    "diffusers.models.modeling_utils": _diffusers_attention_backend_api,
}


class _DropNotice(logging.Filter):
    def __init__(self, matches) -> None:
        super().__init__()
        self.matches = matches

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not self.matches(record)
        except Exception:  # noqa: BLE001 - a record we cannot read is shown, never lost
            return True


def quiet_library_notices() -> None:
    """Attach the filters (once: calling again adds nothing)."""
    for name, matches in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) for f in logger.filters):
            logger.addFilter(_DropNotice(matches))
