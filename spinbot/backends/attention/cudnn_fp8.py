"""FP8 self-attention through cuDNN's fused flash attention (`sdpa_fp8` of NVIDIA's cudnn-frontend), Hopper and
newer. cuDNN's kernel overlaps the softmax with the tensor cores (what our Triton kernel cannot express), so it is
the fast 8-bit path on sm90; the error comes from its per-tensor formats, measured in the README's table.

What is quantized (cuDNN's FP8 attention takes one scale per tensor; e4m3 is a float format, so one scale keeps
every head's relative precision as long as the values stay above 2^-6 of the largest):
- K is smoothed first (its mean over the tokens, per batch and head, subtracted): q . (k - mean) differs from q . k
  by a constant per query, which the softmax removes, and the keys' shared offset no longer sets the scale.
- V: its channel mean is subtracted and added back after (each softmax row sums to 1, so this is exact); the
  output then carries only the deviation from the mean, which is what its e4m3 rounding is relative to.
- Q, K, V: e4m3 at scale 448 / absmax. The scales stay on the GPU (no host sync).
- P (softmax numerators in [0, 1]): cuDNN scales them by 448 before e4m3.
- O: e4m3 on Hopper (cuDNN gives bf16 output from FP8 inputs only on Blackwell), at scale 448 / absmax(V smoothed),
  which cannot overflow since every output row is a convex combination of V's rows.

`quantize` and `dequantize` are plain PyTorch, so under torch.compile Inductor fuses them with the RoPE before and
the projection after; the cuDNN call is an opaque custom op (`spinbot::attention_cudnn_fp8`). On CPU tensors the
op computes the same formats in float32 (`emulate`: slow, for tests).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spinbot.errors import BackendUnavailable

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
CUDNN_MIN_VERSION = 90100  # cuDNN's FP8 forward attention appeared in 9.1
HOPPER = (9, 0)
# Tokens are padded to a multiple of this (the padded keys masked by cuDNN's padding mask): at 480p (32,760
# tokens) the kernel takes 26.3 ms on a ragged length and 22.5 ms on 32,768 (H200, benchmarks/results).
TOKEN_MULTIPLE = 128


@dataclass(frozen=True)
class Quantized:
    """e4m3 Q, K, V [B, L, heads, D] with their per-tensor descales ([1, 1, 1, 1] float32, on the device)."""

    q: torch.Tensor
    k: torch.Tensor  # smoothed
    v: torch.Tensor  # smoothed
    descale_q: torch.Tensor
    descale_k: torch.Tensor
    descale_v: torch.Tensor
    scale_o: torch.Tensor
    v_mean: torch.Tensor  # [B, 1, heads, D] float32
    tokens: int  # before padding


def _to_e4m3(x: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x in e4m3 at scale 448 / absmax with `pad` zero tokens appended, and the descale (absmax / 448) as a
    [1, 1, 1, 1] float32 tensor."""
    descale = (x.abs().amax().float().clamp_min(1e-12) / E4M3_MAX).reshape(1, 1, 1, 1)
    scaled = F.pad(x.float() / descale, (0, 0, 0, 0, 0, pad))
    return scaled.clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), descale


def quantize(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, multiple: int = 1) -> Quantized:
    """q, k, v [B, L, heads, D] -> Quantized, tokens padded to a multiple of `multiple` (see the module docstring)."""
    tokens = q.shape[1]
    pad = (-tokens) % multiple
    kf, vf = k.float(), v.float()
    v_mean = vf.mean(dim=1, keepdim=True)
    q8, descale_q = _to_e4m3(q, pad)
    k8, descale_k = _to_e4m3(kf - kf.mean(dim=1, keepdim=True), pad)
    v8, descale_v = _to_e4m3(vf - v_mean, pad)
    return Quantized(q8, k8, v8, descale_q, descale_k, descale_v, 1.0 / descale_v, v_mean, tokens)


def cudnn_fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over [B, L, heads, D] tensors, FP8 inside cuDNN; output in q's dtype."""
    x = quantize(q, k, v, TOKEN_MULTIPLE if q.is_cuda else 1)
    out = torch.ops.spinbot.attention_cudnn_fp8(
        x.q, x.k, x.v, x.descale_q, x.descale_k, x.descale_v, x.scale_o, x.tokens
    )
    return (out[:, : x.tokens].float() / x.scale_o + x.v_mean).to(q.dtype)


@torch.library.custom_op("spinbot::attention_cudnn_fp8", mutates_args=())
def _attention_cudnn_fp8_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    descale_q: torch.Tensor,
    descale_k: torch.Tensor,
    descale_v: torch.Tensor,
    scale_o: torch.Tensor,
    tokens: int,
) -> torch.Tensor:
    if q.is_cuda:
        return run_cudnn(q, k, v, descale_q, descale_k, descale_v, scale_o, tokens)
    return emulate(q, k, v, descale_q, descale_k, descale_v, scale_o, tokens)


@_attention_cudnn_fp8_op.register_fake
def _(q, k, v, descale_q, descale_k, descale_v, scale_o, tokens):
    return torch.empty_like(q)


def emulate(q, k, v, descale_q, descale_k, descale_v, scale_o, tokens: int) -> torch.Tensor:
    """cuDNN's FP8 formats in float32: Q K^T from the e4m3 values, P = exp(s - rowmax) rounded to e4m3 at scale 448,
    P V from e4m3 V, the normalised output rounded to e4m3 at scale_o (against each row's final maximum where
    the kernel uses a running one); keys past `tokens` masked, as cuDNN's padding mask does."""
    dim = q.shape[-1]
    qf, kf, vf = (t.float().transpose(1, 2) * s for t, s in ((q, descale_q), (k, descale_k), (v, descale_v)))
    scores = qf @ kf.transpose(2, 3) / math.sqrt(dim)  # [B, H, L, L]
    scores[..., tokens:] = float("-inf")
    p = torch.exp(scores - scores.amax(dim=3, keepdim=True))
    p8 = (p * E4M3_MAX).to(E4M3).float() / E4M3_MAX
    out = (p8 @ vf) / p.sum(dim=3, keepdim=True)
    return (out * scale_o).clamp(-E4M3_MAX, E4M3_MAX).transpose(1, 2).to(E4M3)


def check_support(device: torch.device, setting: str = "attention") -> None:
    """One-line errors for what `cudnn-fp8` needs: a Hopper-or-newer GPU, cuDNN 9.1+, the cudnn-frontend package."""
    capability = torch.cuda.get_device_capability(device)
    if capability < HOPPER:
        raise BackendUnavailable(
            f"{setting}=cudnn-fp8 needs cuDNN's FP8 attention, which runs on Hopper or newer "
            f"(compute capability 9.0+); this GPU is sm{capability[0]}{capability[1]}: use int8 or sdpa"
        )
    version = torch.backends.cudnn.version() or 0
    if version < CUDNN_MIN_VERSION:
        raise BackendUnavailable(f"{setting}=cudnn-fp8 needs cuDNN 9.1 or newer; PyTorch has cuDNN {version}")
    try:
        import cudnn  # noqa: F401
    except ImportError as error:
        raise BackendUnavailable(
            f"{setting}=cudnn-fp8 needs NVIDIA's cudnn-frontend: pip install 'spinbot[gpu]' ({error})"
        ) from error


def run_cudnn(q, k, v, descale_q, descale_k, descale_v, scale_o, tokens: int) -> torch.Tensor:
    """One cuDNN FP8 attention on the current stream (keys past `tokens` masked); the graph is built once per
    shape and layout."""
    import cudnn

    plan = _plan(tuple(q.shape), tuple(q.stride()), tuple(k.stride()), tuple(v.stride()), tokens, q.device.index or 0)
    out = torch.empty_like(q)
    amax = torch.empty(2, 1, 1, 1, 1, dtype=torch.float32, device=q.device)
    workspace = torch.empty(plan.workspace_bytes, dtype=torch.uint8, device=q.device)
    cudnn.set_stream(handle=plan.handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
    t = plan.tensors
    plan.graph.execute(
        {
            t["q"]: q,
            t["k"]: k,
            t["v"]: v,
            t["descale_q"]: descale_q,
            t["descale_k"]: descale_k,
            t["descale_v"]: descale_v,
            t["descale_s"]: plan.descale_s,
            t["scale_s"]: plan.scale_s,
            t["scale_o"]: scale_o,
            t["o"]: out,
            t["amax_s"]: amax[0],
            t["amax_o"]: amax[1],
            **({t["seq_len"]: plan.seq_len} if plan.seq_len is not None else {}),
        },
        workspace,
        handle=plan.handle,
    )
    return out


@dataclass(frozen=True)
class _Plan:
    graph: object
    tensors: dict
    handle: object
    workspace_bytes: int
    descale_s: torch.Tensor
    scale_s: torch.Tensor
    seq_len: torch.Tensor | None  # [B, 1, 1, 1] int32, the unpadded length, when the graph masks padding


@functools.lru_cache(maxsize=16)
def _plan(shape: tuple, q_stride: tuple, k_stride: tuple, v_stride: tuple, tokens: int, device_index: int) -> _Plan:
    """cuDNN's graph for [B, L, heads, D] e4m3 inputs with these strides (cuDNN's dims are [B, heads, L, D]), the
    keys and queries past `tokens` masked when L is longer."""
    import cudnn

    def bhsd(values: tuple) -> list[int]:
        return [values[0], values[2], values[1], values[3]]

    with torch.cuda.device(device_index):
        handle = cudnn.create_handle()
        graph = cudnn.pygraph(
            io_data_type=cudnn.data_type.FP8_E4M3,
            intermediate_data_type=cudnn.data_type.FLOAT,
            compute_data_type=cudnn.data_type.FLOAT,
            handle=handle,
        )
        dims = bhsd(shape)
        t = {
            name: graph.tensor(name=name, dim=dims, stride=bhsd(stride), data_type=cudnn.data_type.FP8_E4M3)
            for name, stride in (("q", q_stride), ("k", k_stride), ("v", v_stride))
        }
        for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
            t[name] = graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=cudnn.data_type.FLOAT)
        padded = tokens < shape[1]
        masking = {}
        if padded:
            t["seq_len"] = graph.tensor(
                name="seq_len", dim=[shape[0], 1, 1, 1], stride=[1, 1, 1, 1], data_type=cudnn.data_type.INT32
            )
            masking = {"use_padding_mask": True, "seq_len_q": t["seq_len"], "seq_len_kv": t["seq_len"]}
        o, _, amax_s, amax_o = graph.sdpa_fp8(
            q=t["q"],
            k=t["k"],
            v=t["v"],
            descale_q=t["descale_q"],
            descale_k=t["descale_k"],
            descale_v=t["descale_v"],
            descale_s=t["descale_s"],
            scale_s=t["scale_s"],
            scale_o=t["scale_o"],
            is_inference=True,
            attn_scale=1.0 / math.sqrt(shape[3]),
            use_causal_mask=False,
            name="attention",
            **masking,
        )
        o.set_output(True).set_dim(dims).set_stride(bhsd(q_stride)).set_data_type(cudnn.data_type.FP8_E4M3)
        for amax in (amax_s, amax_o):
            amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1])
            amax.set_data_type(cudnn.data_type.FLOAT)
        t.update(o=o, amax_s=amax_s, amax_o=amax_o)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        device = torch.device("cuda", device_index)
        one = torch.ones(1, 1, 1, 1, device=device)
        seq_len = torch.full((shape[0], 1, 1, 1), tokens, dtype=torch.int32, device=device) if padded else None
        return _Plan(graph, t, handle, graph.get_workspace_size(), one / E4M3_MAX, one * E4M3_MAX, seq_len)
