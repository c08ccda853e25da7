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
accumulator and the row sum. P V accumulates in float32 every BLOCK_N keys (`max_num_imprecise_acc`): Hopper's FP8
tensor cores keep fewer accumulator bits (SageAttention2's two-level accumulation).

EXP2_SPLIT: the exponentials of half of each tile's columns are computed with a cubic polynomial on the FMA units
instead of the special-function unit, which limits FP8 attention on Hopper (FlashAttention 4's trick); the
polynomial's 2e-4 relative error is far below e4m3's rounding of P.
"""

from __future__ import annotations

import logging
import os

import triton
import triton.language as tl

log = logging.getLogger(__name__)


@triton.jit
def _exp2_polynomial(x):
    """2^x on the FMA units: x = j + f, f in [0, 1), 2^f by a cubic fit (max relative error 1.9e-4), j added to the
    exponent bits. x is clamped at -126 (2^-126 becomes 0 in e4m3 anyway)."""
    x = tl.maximum(x, -126.0)
    j = tl.floor(x)
    f = x - j
    p = 0.07901994 * f + 0.22412644
    p = p * f + 0.69683858
    p = p * f + 0.99981196
    bits = p.to(tl.int32, bitcast=True) + (j.to(tl.int32) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _round_to_e4m3(p):
    """p >= 0 rounded to e4m3's grid in float32 arithmetic (3 mantissa bits; subnormal step 2^-9), so that the
    conversion after it is exact. Only for Triton's interpreter, whose float32 -> e4m3 conversion (Triton 3.8)
    corrupts values whose rounding carries into the exponent; the GPU converts with round-to-nearest-even."""
    exponent = tl.maximum(tl.floor(tl.math.log2(tl.maximum(p, 1e-30))), -6.0)
    step = tl.math.exp2(exponent - 3.0)
    return tl.floor(p / step + 0.5) * step


@triton.jit
def _exponentials(x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EXP2_SPLIT: tl.constexpr):
    if EXP2_SPLIT:
        first, second = tl.split(tl.reshape(x, [BLOCK_M, BLOCK_N // 2, 2]))
        return tl.reshape(tl.join(tl.math.exp2(first), _exp2_polynomial(second)), [BLOCK_M, BLOCK_N])
    else:
        return tl.math.exp2(x)


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
    EXP2_SPLIT: tl.constexpr,
    P_SHIFT: tl.constexpr,
    ROUND_P: tl.constexpr,
):
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in tl.range(lo, hi, BLOCK_N):
        k = tl.load(k_ptrs + start_n * HEAD_DIM)
        scale = q_scale * tl.load(k_scale_ptr + start_n // SCALE_BLOCK)
        if QK_INT8:  # noqa: SIM108 - a constexpr branch, compiled away by Triton; keep it a plain if
            raw = tl.dot(q, tl.trans(k), out_dtype=tl.int32).to(tl.float32)
        else:
            raw = tl.dot(q, tl.trans(k))
        if MASK:  # the last, partial block: padded keys get no weight
            raw = tl.where((start_n + offs_n)[None, :] < n_ctx, raw, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(raw, 1) * scale)
        p = _exponentials(raw * scale - (m_new - P_SHIFT)[:, None], BLOCK_M, BLOCK_N, EXP2_SPLIT)
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptrs + start_n)  # [HEAD_DIM, BLOCK_N]
        if ROUND_P:
            p = _round_to_e4m3(p)
        acc = tl.dot(p.to(tl.float8e4nv), tl.trans(v), acc * alpha[:, None], max_num_imprecise_acc=BLOCK_N)
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
    EXP2_SPLIT: tl.constexpr = False,
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
        EXP2_SPLIT,
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
            EXP2_SPLIT,
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
                "8-bit attention: config %s does not compile here: %s",
                config,
                str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
    if not usable:
        raise RuntimeError("8-bit attention: no kernel configuration compiles on this GPU / Triton")
    return usable


# Hopper configurations tried by the autotuner once per shape (tokens, head size, Q K^T format): tiles of at most
# SCALE_BLOCK tokens (one Q and one K scale per tile), with and without the split exponentials.
GPU_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n, "EXP2_SPLIT": split}, num_warps=warps, num_stages=stages)
    for m, n, warps, stages in ((128, 128, 8, 3), (128, 64, 8, 3), (128, 128, 8, 2))
    for split in (False, True)
]
tuned_kernel = triton.autotune(
    configs=GPU_CONFIGS,
    key=["n_ctx", "HEAD_DIM", "QK_INT8"],
    prune_configs_by={"early_config_prune": compiling_configs},
)(attention_8bit_kernel)
