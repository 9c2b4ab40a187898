"""The machine a run measures on, as one frozen object: device, GPU identity, capabilities,
the model's fingerprint, the software, and the matmul ceilings once measured."""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace

import torch

from ..components import Capabilities
from .flops import MatmulPeaks, measure_matmul_peaks
from ..model.models import ModelSource
from ..store.provenance import git_commit, software_versions
from .nvml import GpuIdentity, gpu_identity, gpu_slug, nvml_unavailable_reason


@dataclass(frozen=True)
class Machine:
    device: str
    source: ModelSource
    fingerprint: str
    caps: Capabilities
    gpu: GpuIdentity | None = None
    peaks: MatmulPeaks | None = None  # measured once, before the first model takes the memory

    @classmethod
    def detect(cls, device: str, source: ModelSource) -> Machine:
        cuda = torch.device(device).type == "cuda"
        gpu = gpu_identity(torch.device(device).index or 0) if cuda else None
        return cls(device, source, source.fingerprint(), Capabilities.detect(device), gpu)

    @property
    def cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    @property
    def gpu_name(self) -> str | None:
        return self.gpu.name if self.gpu else self.caps.gpu_name

    @property
    def slug(self) -> str:
        """The baseline folder of this GPU model."""
        return gpu_slug(self.gpu_name) if self.gpu_name else f"cpu-{platform.machine().lower()}"

    @staticmethod
    def gpu_name_on(device: str) -> str | None:
        """The GPU model a run on `device` records as its gpu_name (None on a CPU), without a model."""
        cuda = torch.device(device).type == "cuda"
        gpu = gpu_identity(torch.device(device).index or 0) if cuda else None
        return gpu.name if gpu else Capabilities.detect(device).gpu_name

    def unavailable(self) -> str | None:
        """Why nothing can be measured here, or None."""
        if self.cuda and not torch.cuda.is_available():
            return f"no CUDA GPU visible (torch {torch.__version__}, CUDA build {torch.version.cuda})"
        return None

    def with_ceilings(self, log=lambda _: None) -> Machine:
        if self.peaks is not None or not self.cuda:
            return self
        peaks = measure_matmul_peaks(self.device)
        log(f"matmul ceilings: bf16 {peaks.bf16_tflops} TFLOP/s, fp8 {peaks.fp8_tflops} TFLOP/s")
        return replace(self, peaks=peaks)

    def to_dict(self) -> dict:
        return {
            "gpu": self.gpu.to_dict() if self.gpu else None,
            "gpu_name": self.gpu_name,
            "nvml": nvml_unavailable_reason() or "available",
            "device": self.device,
            "software": software_versions(),
            "commit": git_commit(),
            "model": {"source": self.source.label, "kind": self.source.kind, "fingerprint": self.fingerprint},
            "matmul_peaks": self.peaks.to_dict() if self.peaks else None,
        }
