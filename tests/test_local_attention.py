"""The attention kernels the suite serves itself (components/local_attention.py): each asks for
a CUDA GPU, Hopper or newer, and its package, and says which is missing."""

import pytest

from flux_perf.components import Capabilities
from flux_perf.components.attention_fp8 import CudnnFp8Attention
from flux_perf.components.flash_attn4 import FlashAttn4

HOPPER = Capabilities("cuda", (9, 0), "NVIDIA H100 80GB HBM3", 1)
ADA = Capabilities("cuda", (8, 9), "NVIDIA L40S", 1)


@pytest.mark.parametrize("component, package", [(FlashAttn4, "flash_attn.cute"), (CudnnFp8Attention, "cudnn")])
def test_a_local_kernel_needs_hopper_cuda_and_its_package(component, package, monkeypatch):
    assert "needs a CUDA GPU" in component().unmet(Capabilities("cpu"))
    assert "needs compute capability >= 9.0; NVIDIA L40S has 8.9" in component().unmet(ADA)
    monkeypatch.setattr(Capabilities, "has_package", staticmethod(lambda name: False))
    assert f"needs the Python package(s) {package}" in component().unmet(HOPPER)
    monkeypatch.setattr(Capabilities, "has_package", staticmethod(lambda name: name == package))
    assert component().unmet(HOPPER) is None
