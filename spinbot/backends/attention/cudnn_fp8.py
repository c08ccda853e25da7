"""FP8 self-attention through cuDNN's fused flash attention (`sdpa_fp8` of NVIDIA's cudnn-frontend), Hopper and
newer. NVIDIA's kernel takes 23.3 ms for a 480p self-attention on an H200 against 29.0 ms for our Triton kernel
(eight_bit.py), so it is the fast 8-bit path on sm90; its error comes from the per-tensor formats below and is
measured beside its speed in the README's table.

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

The quantization and the output's dequantization are plain PyTorch, so under torch.compile Inductor fuses them with
the RoPE before and the projection after; the cuDNN call is an opaque custom op (`spinbot::attention_cudnn_fp8`).
On CPU tensors the op computes the same formats in float32 (`emulate`: slow, for tests).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spinbot.errors import BackendUnavailable, first_line

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
CUDNN_MIN_VERSION = 90100  # cuDNN's FP8 forward attention appeared in 9.1
HOPPER = (9, 0)
# Tokens are padded to a multiple of this (the padded keys masked by cuDNN's padding mask): at 480p (32,760 tokens)
# the kernel takes 26.3 ms on the ragged length and 23.3 ms padded to 32,768 (H200,
# benchmarks/results/infinitetalk_speed_gpu_cudnn_fp8_kernels.json).
TOKEN_MULTIPLE = 128
# queries' [B, L, heads, D] (and the keys' when longer) -> the candidate plans' times (ms) and the chosen index
PLAN_TIMES: dict[tuple, dict] = {}


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
    # in q's layout, as the fake kernel below (and cuDNN's output) promises: torch.compile checks the strides
    return torch.empty_like(q).copy_(emulate(q, k, v, descale_q, descale_k, descale_v, scale_o, tokens))


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


def missing(device: torch.device) -> str | None:
    """What `cudnn-fp8` lacks on this CUDA device (a Hopper-or-newer GPU, cuDNN 9.1+, the cudnn-frontend package),
    or None when it can run."""
    capability = torch.cuda.get_device_capability(device)
    if capability < HOPPER:
        return (
            "cuDNN's FP8 attention runs on Hopper or newer (compute capability 9.0+); "
            f"this GPU is sm{capability[0]}{capability[1]}: use int8 or sdpa"
        )
    version = torch.backends.cudnn.version() or 0
    if version < CUDNN_MIN_VERSION:
        return f"cuDNN's FP8 attention needs cuDNN 9.1 or newer; PyTorch has cuDNN {version}"
    try:
        import cudnn  # noqa: F401
    except ImportError as error:
        return f"it needs NVIDIA's cudnn-frontend: pip install -e '.[gpu]' ({error})"
    return None


def check_support(device: torch.device, setting: str = "attention") -> None:
    """A one-line BackendUnavailable naming what `cudnn-fp8` lacks on this device."""
    reason = missing(device)
    if reason is not None:
        raise BackendUnavailable(f"{setting}=cudnn-fp8: {reason}")


def run_cudnn(q, k, v, descale_q, descale_k, descale_v, scale_o, tokens: int, q_tokens: int | None = None):
    """One cuDNN FP8 attention on the current stream: keys past `tokens` masked, and queries past `q_tokens`. q may
    hold fewer rows than k and v, a slice of the queries: the default, `tokens` or q's rows if fewer, is right for
    a slice from the first query only; a later slice passes its own count of real rows. The graph is built and its
    plan chosen once per shape and layout; a shape cuDNN cannot run is refused in one line."""
    q_tokens = min(tokens, q.shape[1]) if q_tokens is None else q_tokens
    if not (0 < q_tokens <= q.shape[1] and 0 < tokens <= k.shape[1]):  # a caller's bug: cuDNN would read past
        raise ValueError(f"run_cudnn: {q_tokens} real queries of {q.shape[1]} rows, {tokens} real keys of {k.shape[1]}")
    try:
        plan = _plan(
            tuple(q.shape),
            tuple(k.shape),
            (tuple(q.stride()), tuple(k.stride()), tuple(v.stride())),
            (q_tokens, tokens),
            q.device.index or 0,
        )
    except (BackendUnavailable, torch.OutOfMemoryError):
        raise
    except Exception as error:  # cuDNN's own errors (e.g. cudnnGraphNotSupportedError) are multi-line C++ texts
        raise BackendUnavailable(
            f"SPINBOT_TALK_ATTENTION=cudnn-fp8: cuDNN cannot run FP8 attention on [B, L, heads, D] {list(q.shape)} "
            f"({type(error).__name__}: {first_line(error)[:200]}); use int8 or sdpa"
        ) from error
    return _execute(plan, q, k, v, descale_q, descale_k, descale_v, scale_o)


def _execute(plan: _Plan, q, k, v, descale_q, descale_k, descale_v, scale_o) -> torch.Tensor:
    import cudnn

    out = torch.empty_like(q)
    amax = torch.empty(2, 1, 1, 1, 1, dtype=torch.float32, device=q.device)
    workspace = torch.empty(plan.workspace_bytes, dtype=torch.uint8, device=q.device)
    cudnn.set_stream(handle=plan.handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
    t = plan.tensors
    buffers = {
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
    }
    if plan.seq_lens is not None:
        buffers[t["seq_len_q"]], buffers[t["seq_len_kv"]] = plan.seq_lens
    plan.graph.execute_plan_at_index(buffers, workspace, plan.index, handle=plan.handle)
    return out


@dataclass(frozen=True)
class _Plan:
    graph: Any  # cudnn.pygraph (cudnn-frontend has no type stubs)
    tensors: dict
    handle: Any
    index: int  # the execution plan chosen by timing (cuDNN's heuristics may offer several)
    workspace_bytes: int
    descale_s: torch.Tensor
    scale_s: torch.Tensor
    seq_lens: tuple[torch.Tensor, torch.Tensor] | None  # [B, 1, 1, 1] int32 query and key lengths, when masked


def _bhsd(values: tuple) -> list[int]:
    """[B, L, heads, D] sizes or strides in cuDNN's [B, heads, L, D] order."""
    return [values[0], values[2], values[1], values[3]]


@functools.lru_cache(maxsize=16)
def _plan(q_shape: tuple, kv_shape: tuple, strides: tuple, tokens: tuple[int, int], device_index: int) -> _Plan:
    """cuDNN's graph for [B, L, heads, D] e4m3 queries and keys/values with these strides (q, k, v), the queries past
    tokens[0] and the keys past tokens[1] masked when the tensors are longer; every plan the heuristics offer is
    built and the fastest on zero inputs kept (as torch.backends.cudnn.benchmark does for convolutions)."""
    import cudnn

    with torch.cuda.device(device_index):
        handle = cudnn.create_handle()
        graph, t = _graph(cudnn, handle, (q_shape, kv_shape, kv_shape), strides, tokens)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.B, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        device = torch.device("cuda", device_index)
        one = torch.ones(1, 1, 1, 1, device=device)
        seq_lens = None
        if "seq_len_q" in t:
            q_len, kv_len = (torch.full((q_shape[0], 1, 1, 1), n, dtype=torch.int32, device=device) for n in tokens)
            seq_lens = (q_len, kv_len)
        plan = _Plan(graph, t, handle, 0, 0, one / E4M3_MAX, one * E4M3_MAX, seq_lens)
        return _fastest(plan, (q_shape, kv_shape, kv_shape), strides, device)


def _graph(cudnn, handle, shapes: tuple, strides: tuple, tokens: tuple[int, int]):
    """The sdpa_fp8 graph for q, k, v of these shapes and strides, and its tensors by name."""
    graph = cudnn.pygraph(
        io_data_type=cudnn.data_type.FP8_E4M3,
        intermediate_data_type=cudnn.data_type.FLOAT,
        compute_data_type=cudnn.data_type.FLOAT,
        handle=handle,
    )
    t = {
        name: graph.tensor(name=name, dim=_bhsd(shape), stride=_bhsd(stride), data_type=cudnn.data_type.FP8_E4M3)
        for name, shape, stride in zip(("q", "k", "v"), shapes, strides)
    }
    for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
        t[name] = graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=cudnn.data_type.FLOAT)
    masking = {}
    if tokens[0] < shapes[0][1] or tokens[1] < shapes[1][1]:
        for name in ("seq_len_q", "seq_len_kv"):
            t[name] = graph.tensor(
                name=name, dim=[shapes[0][0], 1, 1, 1], stride=[1, 1, 1, 1], data_type=cudnn.data_type.INT32
            )
        masking = {"use_padding_mask": True, "seq_len_q": t["seq_len_q"], "seq_len_kv": t["seq_len_kv"]}
    scales = {name: t[name] for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")}
    o, _, amax_s, amax_o = graph.sdpa_fp8(
        q=t["q"],
        k=t["k"],
        v=t["v"],
        **scales,
        is_inference=True,
        attn_scale=1.0 / math.sqrt(shapes[0][3]),
        use_causal_mask=False,
        name="attention",
        **masking,
    )
    o.set_output(True).set_dim(_bhsd(shapes[0])).set_stride(_bhsd(strides[0])).set_data_type(cudnn.data_type.FP8_E4M3)
    for amax in (amax_s, amax_o):
        amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1])
        amax.set_data_type(cudnn.data_type.FLOAT)
    t.update(o=o, amax_s=amax_s, amax_o=amax_o)
    return graph, t


def _fastest(plan: _Plan, shapes: tuple, strides: tuple, device: torch.device) -> _Plan:
    """`plan` with the fastest of the graph's execution plans (each built and timed twice on zero inputs)."""
    graph = plan.graph
    timings: dict = {}
    # zero inputs laid out as the graph's strides say (they may span more than a dense tensor)
    q, k, v = (
        torch.empty_strided(shape, stride, dtype=E4M3, device=device).zero_() for shape, stride in zip(shapes, strides)
    )
    scale = plan.scale_s / E4M3_MAX  # ones
    for index in range(graph.get_execution_plan_count()):
        try:
            graph.build_plan_at_index(index)
            workspace = graph.get_workspace_size_plan_at_index(index)
            trial = dataclasses.replace(plan, index=index, workspace_bytes=workspace)
            _execute(trial, q, k, v, scale, scale, scale, scale)  # warm-up
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            _execute(trial, q, k, v, scale, scale, scale, scale)
            end.record()
            end.synchronize()
            timings[index] = (start.elapsed_time(end), workspace)
        except Exception as error:  # noqa: BLE001 (a plan cuDNN lists but cannot build or run is skipped)
            timings[index] = f"{type(error).__name__}: {str(error)[:160]}"
    measured = {i: v for i, v in timings.items() if isinstance(v, tuple)}
    if not measured:
        reasons = "; ".join(" ".join(str(v).split()) for v in timings.values())[:300]
        raise BackendUnavailable(
            f"SPINBOT_TALK_ATTENTION=cudnn-fp8: cuDNN has no working FP8 attention plan for [B, L, heads, D] "
            f"{list(shapes[0])} ({reasons}); use int8 or sdpa"
        )
    index = min(measured, key=lambda i: measured[i][0])
    shown = {i: (round(v[0], 3) if isinstance(v, tuple) else v) for i, v in timings.items()}
    PLAN_TIMES[shapes[0] if shapes[0] == shapes[1] else shapes[:2]] = {"chosen": index, "ms": shown}
    return dataclasses.replace(plan, index=index, workspace_bytes=measured[index][1])
