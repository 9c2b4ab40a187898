"""FP8 attention: cuDNN's per-tensor FP8 SDPA (nvidia-cudnn-frontend's Python graph API) inside
diffusers' attention dispatch.

Q, K and V are quantized to e4m3 with one scale each (448 / their absolute maximum) in plain torch
code before the kernel. Under torch.compile that code fuses into the kernels that make Q, K and V
(RMSNorm, RoPE), which is what lets FP8 attention pay: unfused, the three quantize passes cost more
than the kernel saves (0.9 ms against 0.42 ms per layer at 8704 tokens, DESIGN). The kernel runs
as a torch custom op, so the compiled graph keeps it instead of breaking at every attention call.

On Hopper cuDNN writes the output in FP8 too. V's scale fits it: every output row is a convex
combination of V's rows (the softmax weights sum to 1), so |O| <= max|V|.

`attn-fp8:static` fixes each layer's Q/K/V scales at the largest |Q|, |K|, |V| that layer saw in the
calibration generation: the quantization is then one pass fused into RMSNorm and RoPE, instead of
an amax reduction followed by a cast (about a third of what remained of the quantization's share).
"""

from __future__ import annotations

import functools

import torch

from ..model.scenarios import Scenario, parse_scenario
from .base import CALIBRATION_SCENARIO, parse_choice_param
from .flux_processor import flux_processor_class
from .layers import attention_modules
from .local_attention import LocalAttentionKernel

OP_NAME = "flux_perf::cudnn_sdpa_fp8"
E4M3_MAX = 448.0
# Scale of the softmax probabilities P (in [0, 1]) when cuDNN quantizes them for P @ V: the largest
# power of two that keeps 1.0 inside e4m3, so small probabilities keep their precision.
SOFTMAX_SCALE = 256.0

# Caches of what cuDNN builds, reached from the custom op (which cannot see the component): emptied
# by the component's `release`, so no stack inherits another's graphs or handles.
_graphs: dict = {}  # (shapes, strides, device, attention scale) -> built cuDNN graph, tensors and handle
_handles: dict = {}  # device -> cuDNN handle
_constants: dict = {}  # (value, device) -> (1, 1, 1, 1) float32 tensor


def quantize_e4m3(tensor: torch.Tensor, amax: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 tensor, descale as a (1, 1, 1, 1) float32 tensor), scaled so that `amax` (a 0-d
    float32 tensor; the tensor's own absolute maximum when None) lands on e4m3's largest value.
    A calibrated `amax` makes it one pointwise pass; larger values saturate."""
    if amax is None:
        amax = tensor.detach().abs().amax().float()
    scale = E4M3_MAX / amax.clamp(min=1e-6)
    quantized = (tensor.float() * scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return quantized, (1.0 / scale).reshape(1, 1, 1, 1)


# Static scales: each attention layer keeps its calibrated max |Q|, |K|, |V| in this buffer, which its
# processor hands to the FP8 attention. Under regional compile the buffers are graph inputs: one graph
# still serves every block of a class.
AMAX_BUFFER = "fp8_qkv_amax"


@functools.cache
def layer_scales_processor_class():
    class LayerScalesProcessor(flux_processor_class()):
        """FLUX's processor calling the FP8 attention with its layer's Q/K/V maxima (`attn.fp8_qkv_amax`),
        which diffusers' dispatch could not pass. While `observing` (the calibration generation), it
        quantizes on each tensor's own maximum and raises the layer's maxima to it."""

        def __init__(self, slot):
            super().__init__()
            self.slot = slot  # the borrowed dispatch slot: FP8 while the module's backend is this one
            self.observing = True

        def attend(self, attn, query, key, value, attention_mask):
            if self._attention_backend is not self.slot:  # a later stack set another backend on the model
                return super().attend(attn, query, key, value, attention_mask)
            if attention_mask is not None or self._parallel_config is not None:
                raise ValueError("attn-fp8:static serves plain attention only: no mask or context parallel")
            return fp8_sdpa(query, key, value, amax=getattr(attn, AMAX_BUFFER), observe=self.observing)

    return LayerScalesProcessor


def _constant(value: float, device: torch.device) -> torch.Tensor:
    key = (value, device)
    if key not in _constants:
        _constants[key] = torch.full((1, 1, 1, 1), value, dtype=torch.float32, device=device)
    return _constants[key]


def _bhsd(tensor: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """cuDNN's (batch, heads, tokens, dim) view of diffusers' (batch, tokens, heads, dim) tensor."""
    (b, s, h, d), (sb, ss, sh, sd) = tensor.shape, tensor.stride()
    return (b, h, s, d), (sb, sh, ss, sd)


def _build_graph(query, key, value, output, attn_scale: float):
    import cudnn

    device = query.device
    if device not in _handles:
        _handles[device] = cudnn.create_handle()
    handle = _handles[device]
    e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
    tensors = {}
    for name, tensor in (("q", query), ("k", key), ("v", value)):
        dim, stride = _bhsd(tensor)
        tensors[name] = graph.tensor(name=name, dim=dim, stride=stride, data_type=e4m3)
    for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
        tensors[name] = graph.tensor(name=name, dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=fp32)
    o, _, amax_s, amax_o = graph.sdpa_fp8(
        q=tensors["q"], k=tensors["k"], v=tensors["v"],
        descale_q=tensors["descale_q"], descale_k=tensors["descale_k"], descale_v=tensors["descale_v"],
        descale_s=tensors["descale_s"], scale_s=tensors["scale_s"], scale_o=tensors["scale_o"],
        generate_stats=False, attn_scale=attn_scale, use_causal_mask=False, name="flux_perf_sdpa_fp8",
    )
    dim, stride = _bhsd(output)
    o.set_output(True).set_dim(dim).set_stride(stride).set_data_type(e4m3)  # Hopper: FP8 output only
    for amax in (amax_s, amax_o):
        amax.set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(fp32)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    tensors.update(o=o, amax_s=amax_s, amax_o=amax_o)
    return graph, tensors, handle


def cudnn_kernel(query, key, value, descale_q, descale_k, descale_v, scale_o, output, attn_scale: float,
                 softmax_scale: float) -> None:
    """Run cuDNN's FP8 SDPA into `output` on the current stream (CUDA-graph capturable once built)."""
    import cudnn

    cache_key = (query.shape, query.stride(), key.shape, key.stride(), value.shape, value.stride(),
                 output.stride(), query.device, attn_scale)
    if cache_key not in _graphs:
        _graphs[cache_key] = _build_graph(query, key, value, output, attn_scale)
    graph, t, handle = _graphs[cache_key]
    device = query.device
    amax_s, amax_o = torch.empty(2, 1, 1, 1, 1, dtype=torch.float32, device=device)
    variant_pack = {
        t["q"]: query, t["k"]: key, t["v"]: value,
        t["descale_q"]: descale_q, t["descale_k"]: descale_k, t["descale_v"]: descale_v,
        t["descale_s"]: _constant(1.0 / softmax_scale, device), t["scale_s"]: _constant(softmax_scale, device),
        t["scale_o"]: scale_o, t["o"]: output, t["amax_s"]: amax_s, t["amax_o"]: amax_o,
    }
    workspace = torch.empty(graph.get_workspace_size(), dtype=torch.uint8, device=device)
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(device).cuda_stream)
    graph.execute(variant_pack, workspace, handle=handle)


@torch.library.custom_op(OP_NAME, mutates_args=())
def cudnn_sdpa_fp8(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, descale_q: torch.Tensor,
                   descale_k: torch.Tensor, descale_v: torch.Tensor, scale_o: torch.Tensor, attn_scale: float,
                   softmax_scale: float) -> torch.Tensor:
    """Non-causal FP8 attention on e4m3 (batch, tokens, heads, dim) tensors; returns e4m3 output
    scaled by `scale_o`."""
    output = query.new_empty(*query.shape[:-1], value.shape[-1])
    cudnn_kernel(query.contiguous(), key.contiguous(), value.contiguous(), descale_q, descale_k, descale_v, scale_o,
                 output, attn_scale, softmax_scale)
    return output


@cudnn_sdpa_fp8.register_fake
def _cudnn_sdpa_fp8_shape(query, key, value, descale_q, descale_k, descale_v, scale_o, attn_scale, softmax_scale):
    return query.new_empty(*query.shape[:-1], value.shape[-1])


def fp8_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None,
             amax: torch.Tensor | None = None, observe: bool = False) -> torch.Tensor:
    """Non-causal FP8 attention on (batch, tokens, heads, dim) tensors. Scales: each tensor's own
    maximum, or a layer's calibrated maxima `amax` (float32, shape (3,): |Q|, |K|, |V|); with
    `observe`, each tensor's own, and `amax` is raised in place to what they show."""
    fixed = amax is not None and not observe
    (q8, descale_q), (k8, descale_k), (v8, descale_v) = (
        quantize_e4m3(t, amax[i] if fixed else None) for i, t in enumerate((query, key, value)))
    if observe and amax is not None:  # calibrating: keep the layer's largest |Q|, |K|, |V|
        seen = torch.cat([descale_q, descale_k, descale_v]).flatten() * E4M3_MAX
        amax.copy_(torch.maximum(amax, seen))
    attn_scale = scale if scale is not None else query.shape[-1] ** -0.5
    o8 = torch.ops.flux_perf.cudnn_sdpa_fp8(q8, k8, v8, descale_q, descale_k, descale_v, 1.0 / descale_v,
                                            attn_scale, SOFTMAX_SCALE)
    return (o8.float() * descale_v).to(query.dtype)


def fp8_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
                  scale: float | None = None, is_causal: bool = False, return_lse: bool = False,
                  _parallel_config=None) -> torch.Tensor:
    """diffusers' backend signature (its dispatcher passes only the names this one declares); each
    call quantizes on the tensors' own maxima."""
    if attn_mask is not None or is_causal or return_lse or _parallel_config is not None:
        raise ValueError("attn-fp8 serves plain non-causal attention only: no mask, causal, lse or context parallel")
    return fp8_sdpa(query, key, value, scale)


def clear_cudnn_caches() -> None:
    """Drop every built cuDNN graph and constant, and destroy the handles they ran on."""
    _graphs.clear()
    _constants.clear()
    handles = list(_handles.values())
    _handles.clear()
    if handles:
        import cudnn

        for handle in handles:
            cudnn.destroy_handle(handle)


class CudnnFp8Attention(LocalAttentionKernel):
    name = "attn-fp8"
    summary = ("cuDNN's per-tensor FP8 attention (nvidia-cudnn-frontend); Q/K/V quantized in torch code that "
               "torch.compile fuses into the norm and RoPE before it")
    lossless = False
    min_capability = (9, 0)  # FP8 tensor cores of Hopper (Ada's are not served by this cuDNN path)
    packages = ("cudnn",)
    # A slot no machine here can use: AMD's hub kernel (no hub is reachable, and these are NVIDIA GPUs).
    slot_name = "AITER_FA2_HUB"
    kernel = "cudnn sdpa_fp8 (per-tensor e4m3)"
    dispatch = staticmethod(fp8_attention)
    default_param = "dynamic"

    def validate_param(self) -> None:
        parse_choice_param(self, ("dynamic", "static"))

    def apply(self, pipe) -> None:
        if self.param == "static":
            from diffusers.models.attention_dispatch import AttentionBackendName

            processor_class = layer_scales_processor_class()
            for module in list(attention_modules(pipe.transformer)):
                module.set_processor(processor_class(AttentionBackendName[self.slot_name]))
                device = next(module.parameters()).device
                module.register_buffer(AMAX_BUFFER, torch.zeros(3, dtype=torch.float32, device=device))
        super().apply(pipe)  # borrows the slot and points every processor, the new ones included, at it

    def calibration_scenario(self) -> Scenario | None:
        return parse_scenario(CALIBRATION_SCENARIO) if self.param == "static" else None

    def after_calibration(self, pipe) -> None:
        layers = [m for m in attention_modules(pipe.transformer) if hasattr(m, AMAX_BUFFER)]
        for module in layers:
            module.processor.observing = False
        unseen = sum(1 for m in layers if not bool((getattr(m, AMAX_BUFFER) > 0).all()))
        if unseen:
            raise RuntimeError(f"{self.spec}: the calibration generation left {unseen} of {len(layers)} attention "
                               "layers without Q/K/V maxima")

    def release(self, pipe) -> None:
        super().release(pipe)
        clear_cudnn_caches()

    def report(self) -> dict:
        return {**super().report(), "softmax_scale": SOFTMAX_SCALE, "scales": self.param}
