"""The Triton kernel of the 8-bit attention (eight_bit.py prepares its inputs): FlashAttention's online softmax over
8-bit Q K^T (INT8 or FP8 e4m3 per-block scales) and FP8 P V (V per-channel scales), float32 accumulation, bfloat16
output in the model's [B, L, heads, D] layout.

Written here because no PyPI kernel does this fast on Hopper: sageattention 1.0.6 (Triton, INT8 Q K^T, 16-bit P V)
runs slower than cuDNN's bfloat16 attention on an H200 (docs/infinitetalk-notes.md); FlashAttention 4's FP8 path
asserts a Blackwell GPU; torch's FP8 SDPA needs FlashAttention 3, which is not on PyPI.

Inputs (per batch x head `bh`, tokens padded to a multiple of the scale block):
- q [BH, Lp, D], k [BH, Lp, D]: int8 or e4m3, one float32 scale per SCALE_BLOCK tokens (q_scale, k_scale [BH, nb]);
- vt [BH, D, Lp]: e4m3, V transposed (Hopper's 8-bit tensor-core instructions read both operands K-major), one
  float32 scale per channel (v_scale [BH, D]) and the channel mean removed before quantization (v_mean [BH, D]).
Scores are worked in base 2 (exp2), the softmax scale folded into the per-tile scalar. P = 2^(s - max + P_SHIFT)
lies in [0, 2^P_SHIFT], well inside e4m3 (max 448), so P needs no scale: the factor cancels between the
accumulator and the row sum. Each key tile's P V is computed from zero and added to the float32 accumulator
(Hopper's FP8 tensor cores keep fewer accumulator bits: SageAttention 2's two-level accumulation), written as an
explicit add: Triton's `max_num_imprecise_acc` does the same with adds inside the wgmma chain, which makes ptxas
serialize every wgmma of the kernel (its C7514 note; a wait after each of them in the SASS).

Between the products, the arithmetic on each score is what the kernel waits for (Triton does not overlap it with
the tensor cores on Hopper, so every instruction per score adds to the time). INT8 Q K^T therefore starts its
int32 accumulation from MAGIC, the bits of the float 1.5 * 2^23: the product's bits read as a float32 are then
exactly 1.5 * 2^23 + s (|s| <= 127 * 127 * 128 < 2^22), so no int-to-float conversion is needed; the offset is
folded into the one fused multiply-add that scales the scores.

Measured on an H200 at 480p (benchmarks/results/infinitetalk_speed_gpu_v2.json) and dropped: exponentials in half
precision (`ex2.approx.f16x2`, still one special-function instruction per value on sm90) 33.4 against 31.1 ms;
the row sums by a product with a ones matrix on the tensor cores (one more wgmma wait a tile) 40.8 ms; half of
the exponentials by a cubic on the FMA units (FlashAttention 4's trick) 39.6 against 33.5 ms
(infinitetalk_speed_gpu.json). What did help: one warpgroup per program (BLOCK_M 64, two programs per
multiprocessor, so one's softmax can run beside the other's products), 28.3 ms; Hopper runs it (HOPPER_CONFIG).
"""

from __future__ import annotations

import logging
import os

import triton
import triton.language as tl

from spinbot.errors import first_line

log = logging.getLogger(__name__)


MAGIC = tl.constexpr(0x4B400000)  # the float32 1.5 * 2^23 as int32 bits
MAGIC_FLOAT = tl.constexpr(12582912.0)


@triton.jit
def _round_to_e4m3(p):
    """p >= 0 rounded to e4m3's grid in float32 arithmetic (3 mantissa bits; subnormal step 2^-9; ties to even), so
    that the conversion after it is exact. Only for Triton's interpreter, whose float32 -> e4m3 conversion (Triton 3.8)
    corrupts values whose rounding carries into the exponent; the GPU converts with round-to-nearest-even."""
    exponent = tl.maximum(tl.floor(tl.math.log2(tl.maximum(p, 1e-30))), -6.0)
    step = tl.math.exp2(exponent - 3.0)
    steps = p / step
    nearest = tl.floor(steps + 0.5)
    odd_tie = (nearest - steps == 0.5) & (nearest - 2.0 * tl.floor(nearest * 0.5) == 1.0)
    return tl.where(odd_tie, nearest - 1.0, nearest) * step  # ties to even, as the GPU's conversion rounds


@triton.jit
def _key_blocks(
    acc,
    l_i,
    m_i,
    q,
    q_scale,
    k_ptrs,
    v_ptrs,
    k_scale_ptr,
    lo,
    hi,
    n_ctx,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SCALE_BLOCK: tl.constexpr,
    QK_INT8: tl.constexpr,
    MASK: tl.constexpr,
    P_SHIFT: tl.constexpr,
    ROUND_P: tl.constexpr,
):
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in tl.range(lo, hi, BLOCK_N):
        k = tl.load(k_ptrs + start_n * HEAD_DIM)
        scale = q_scale * tl.load(k_scale_ptr + start_n // SCALE_BLOCK)
        if QK_INT8:  # accumulated from MAGIC: the int32 bits read as float32 are MAGIC_FLOAT + s, exactly
            start = tl.full([BLOCK_M, BLOCK_N], MAGIC, tl.int32)
            raw = tl.dot(q, tl.trans(k), start, out_dtype=tl.int32).to(tl.float32, bitcast=True)
            offset = MAGIC_FLOAT
        else:
            raw = tl.dot(q, tl.trans(k))
            offset = 0.0
        if MASK:  # the last, partial block: padded keys get no weight
            raw = tl.where((start_n + offs_n)[None, :] < n_ctx, raw, float("-inf"))
        m_new = tl.maximum(m_i, (tl.max(raw, 1) - offset) * scale)
        x = raw * scale - (offset * scale + m_new - P_SHIFT)[:, None]  # one FMA a score
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(x)
        row_sum = tl.sum(p, 1)
        if ROUND_P:
            p = _round_to_e4m3(p)
        p8 = p.to(tl.float8e4nv)
        v = tl.load(v_ptrs + start_n)  # [HEAD_DIM, BLOCK_N]
        acc = acc * alpha[:, None] + tl.dot(p8, tl.trans(v))  # this tile's P V from zero, added in float32
        l_i = l_i * alpha + row_sum
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["n_ctx"])  # one binary for every sequence length
def attention_8bit_kernel(
    Q,
    K,
    Vt,
    QScale,
    KScale,
    VScale,
    VMean,
    Out,
    softmax_scale_log2,
    n_ctx,
    n_pad,
    heads,
    stride_ob,
    stride_ol,
    stride_oh,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SCALE_BLOCK: tl.constexpr,
    QK_INT8: tl.constexpr,
    P_SHIFT: tl.constexpr,
    ROUND_P: tl.constexpr = False,
):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    blocks = n_pad // SCALE_BLOCK
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    qk_base = bh.to(tl.int64) * n_pad * HEAD_DIM
    q = tl.load(Q + qk_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :])  # padded rows exist
    q_scale = tl.load(QScale + bh * blocks + (start_m * BLOCK_M) // SCALE_BLOCK) * softmax_scale_log2
    k_ptrs = K + qk_base + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    v_ptrs = Vt + bh.to(tl.int64) * HEAD_DIM * n_pad + offs_d[:, None] * n_pad + offs_n[None, :]
    k_scale_ptr = KScale + bh * blocks

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    full = (n_ctx // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _key_blocks(
        acc,
        l_i,
        m_i,
        q,
        q_scale,
        k_ptrs,
        v_ptrs,
        k_scale_ptr,
        0,
        full,
        n_ctx,
        HEAD_DIM,
        BLOCK_M,
        BLOCK_N,
        SCALE_BLOCK,
        QK_INT8,
        False,
        P_SHIFT,
        ROUND_P,
    )
    if full < n_ctx:
        acc, l_i, m_i = _key_blocks(
            acc,
            l_i,
            m_i,
            q,
            q_scale,
            k_ptrs,
            v_ptrs,
            k_scale_ptr,
            full,
            full + BLOCK_N,
            n_ctx,
            HEAD_DIM,
            BLOCK_M,
            BLOCK_N,
            SCALE_BLOCK,
            QK_INT8,
            True,
            P_SHIFT,
            ROUND_P,
        )

    v_scale = tl.load(VScale + bh * HEAD_DIM + offs_d)
    v_mean = tl.load(VMean + bh * HEAD_DIM + offs_d)
    out = acc * (1.0 / l_i)[:, None] * v_scale[None, :] + v_mean[None, :]
    b = bh // heads
    h = bh % heads
    out_ptrs = (
        Out + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_ol + offs_d[None, :]
    )
    tl.store(out_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < n_ctx)


def interpreted() -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1): the kernel runs in numpy on CPU tensors (the CI's path)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def compiling_configs(configs: list, named_args: dict, **kwargs) -> list:
    """The autotuner's first pass: only the configurations that compile for this call's arguments (a config that
    fails to lower on some Triton version is dropped, instead of failing the attention); compiling here fills the
    kernel cache that the timing runs then use."""
    usable = []
    launch = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}  # the autotuner passes its launch's
    for config in configs:
        try:
            attention_8bit_kernel.warmup(**named_args, **launch, **config.all_kwargs(), grid=(1,))
            usable.append(config)
        except Exception as error:  # noqa: BLE001 (any lowering failure: the config is not usable here)
            log.warning(
                "8-bit attention: a kernel configuration does not compile here",
                extra={"config": str(config), "error": first_line(error)},
            )
    if not usable:
        raise RuntimeError("8-bit attention: no kernel configuration compiles on this GPU / Triton")
    return usable


# Configurations the autotuner tries once per shape (tokens, head size, Q K^T format) on GPUs other than Hopper
# (which runs HOPPER_CONFIG, below), all timed on an H200 by the benchmark: 128-key tiles (at most SCALE_BLOCK
# tokens: one Q and one K scale per tile; 64-key tiles measured 20% slower); 128 query rows on two warpgroups, or
# 64 rows on one warpgroup with two programs per multiprocessor; pipeline depths (fewer stages for GPUs with less
# shared memory than Hopper's).
GPU_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": 128}, num_warps=warps, num_stages=stages)
    for m, warps, stages in ((128, 8, 3), (128, 8, 2), (128, 8, 4), (64, 4, 3), (64, 4, 2))
]


tuned_kernel = triton.autotune(
    configs=GPU_CONFIGS,
    key=["n_ctx", "HEAD_DIM", "QK_INT8"],
    prune_configs_by={"early_config_prune": compiling_configs},
)(attention_8bit_kernel)

# Hopper (sm90) takes one configuration, not the autotuner's pick: 64 query rows on one warpgroup, two programs a
# multiprocessor, was the fastest of GPU_CONFIGS on an H200 at 480p and 720p for both Q K^T formats (28.3 against
# 31.0-36.6 ms at 480p INT8; benchmarks/results/infinitetalk_speed_gpu_v3.json) and gave the faster 14B step (2.33
# against 2.42 s). Tuned inside the model's first call, the autotuner chose a 128-row configuration instead, even
# timing each configuration over 600 ms (infinitetalk_speed_gpu_tuned_in_model.json).
HOPPER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3}


def pinned_config(capability: tuple[int, int]) -> dict | None:
    """The configuration a GPU of this compute capability runs, or None: the autotuner chooses."""
    return dict(HOPPER_CONFIG) if capability == (9, 0) else None
