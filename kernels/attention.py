"""Fused attention (FlashAttention-style): forward with an online softmax, deterministic backward.

Notation: queries q (B, Hq, Sq, D), keys k (B, Hkv, Sk, D), values v (B, Hkv, Sk, Dv), output
o (B, Hq, Sq, Dv); query head h reads key/value head h // G, with G = Hq / Hkv (GQA; MQA is
Hkv = 1). Per (b, h):

    S = q k^T * scale + mask        (mask: additive, or -inf where a boolean mask is False,
                                     or where is_causal hides key j from query i, j > i)
    P = softmax(S) over keys,       O = (P o Z) v,     Z = keep / (1 - dropout_p)

Neither S nor P is ever stored; each kernel rebuilds the tile of S it needs from q and k:

  forward    rows: a block of queries; loop over key blocks    attention_forward_kernel
             keeps the running max and sum of the online softmax, writes O and
             lse = log2 sum_j 2^(S_ij log2 e)  (the log-sum-exp in base 2, fp32 / fp64)
  preprocess delta_i = sum_d dO_id O_id                          attention_backward_preprocess_kernel
  dK, dV     rows: a block of keys; loop over the G query heads  attention_backward_dkdv_kernel
             of its group and over query blocks: every program owns its output rows, so GQA's
             sum over heads is a plain loop, deterministic, without atomics
  dQ         rows: a block of queries; loop over key blocks     attention_backward_dq_kernel
             (optionally writes dS, the gradient of an additive mask)

Scores are kept in base-2 units (S * log2 e) so that every exponential is one exp2, as in
Triton's fused-attention tutorial. The constants scale, scale * log2 e, log2 e and 1 / (1 - p)
reach the kernels in a small tensor of the accumulator dtype (`scales_ptr`), because Triton
passes Python floats as fp32 and fp64 gradchecks need them exact.

Dropout: key j of query row r = (b * Hq + h) * Sq + i is kept when u >= p, with
u = tl.rand(seed, r * Sk + j) (Philox4x32, counter = that int64 offset): the mask depends on
(seed, b, h, i, j) alone, so both backward kernels regenerate it tile by tile.

docs/attention.md derives the backward and ties each step to its line here.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from tritonprop import backend
from tritonprop.kernels._common import (_allow_tf32, _block, _next_pow2, accumulator_dtype, accumulator_torch_dtype,
                                        cdiv, dot_accumulate, dot_options, ensure_scratch_allocator, launch,
                                        launch_tuned)

# attn_mask kinds (constexpr MASK_KIND).
NO_MASK, BOOL_MASK, ADDITIVE_MASK = 0, 1, 2
# Where a finite additive mask value is clamped before it is scaled by log2(e) (`_scores`): the
# float32 minimum / log2(e) is -2.36e38, so anything lower would overflow to -inf.
MASK_FLOOR: tl.constexpr = tl.constexpr(-2.3e38)

# (BLOCK_M, BLOCK_N, num_warps, num_stages) per pass, keyed by the element size of q and by
# whether the head dim exceeds 64 / 128: the config each launch starts from. The 16-bit tiles are those of Triton's tutorial for Hopper, with 8 warps (two
# warpgroups) where the static sm_90 report (bench/results/static-sm90.md) showed 4 warps at
# the register limit: the D=64 forward used 234 registers (120 at 8 warps, still 2 CTAs per SM),
# and dK/dV used 255 and spilled 32-224 bytes (166-195 at 8 warps, no spills). fp32/fp64 tiles
# are shrunk so that they fit in registers and shared memory.
#   forward and dQ: BLOCK_M queries x BLOCK_N keys per step; dK/dV: BLOCK_N keys x BLOCK_M queries.
FORWARD_TILES = {
    2: {64: (128, 64, 8, 3), 128: (128, 64, 8, 3), 256: (64, 32, 8, 2)},
    4: {64: (64, 32, 4, 2), 128: (64, 32, 4, 2), 256: (32, 32, 4, 1)},
    8: {64: (32, 32, 4, 1), 128: (32, 16, 4, 1), 256: (16, 16, 4, 1)},
}
DKDV_TILES = {
    2: {64: (32, 128, 8, 3), 128: (32, 64, 8, 3), 256: (16, 32, 4, 2)},
    4: {64: (32, 64, 4, 2), 128: (16, 32, 4, 2), 256: (16, 16, 4, 1)},
    8: {64: (16, 32, 4, 1), 128: (16, 16, 4, 1), 256: (16, 16, 4, 1)},
}
DQ_TILES = {
    2: {64: (128, 32, 4, 3), 128: (64, 32, 4, 3), 256: (32, 16, 4, 2)},
    4: {64: (64, 32, 4, 2), 128: (32, 32, 4, 2), 256: (16, 16, 4, 1)},
    8: {64: (32, 16, 4, 1), 128: (16, 16, 4, 1), 256: (16, 16, 4, 1)},
}
# Further configs the autotuner times on the GPU beside the 16-bit tiles above at head dims 64
# and 128 (never under the interpreter): other tile shapes, warps and stages. Each compiles
# without spills at the benchmark shapes (bench/results/static-sm90.md).
GPU_ALTERNATIVES = {
    "forward": {64: [(128, 128, 8, 3), (128, 64, 4, 3)], 128: [(128, 64, 8, 2), (64, 64, 4, 3)]},
    "dkdv": {64: [(64, 128, 8, 3), (32, 64, 4, 3)], 128: [(32, 64, 8, 2), (32, 128, 8, 2)]},
    "dq": {64: [(128, 64, 8, 3), (64, 32, 4, 3)], 128: [(128, 32, 8, 3), (64, 64, 4, 2)]},
}
PREPROCESS_BLOCK_M = 64
# Under the interpreter every program and loop step costs Python time while numpy handles a large
# tile as cheaply as a small one, so all passes use this square tile there.
INTERPRETER_BLOCK = 64
# SDPA's fp32 matmuls are cuBLAS-style matmuls: torch's matmul TF32 flag governs them.
TF32_FLAG = "matmul"


# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _scores(qk, i, j, Sq, Sk, mask_ptr, stride_maskm, stride_maskn, qk_scale2, log2e,
            MASK_KIND: tl.constexpr, CHECK_KEYS: tl.constexpr, APPLY_CAUSAL: tl.constexpr):
    """A tile of S in base-2 units, -inf where key j is hidden from query i.

    `i` and `j` are broadcastable index tiles ([M, 1] and [1, N] in the forward and dQ kernels,
    transposed in the dK/dV kernel), so one helper serves both orientations. `mask_ptr` points at
    this (b, h)'s mask; broadcast dims have stride 0, so a (B, 1, 1, Sk) key-padding mask is read
    in place. CHECK_KEYS and APPLY_CAUSAL are off for tiles known to lie inside Sk and entirely
    left of the causal diagonal, which skips the selects there.
    """
    s = qk * qk_scale2
    if MASK_KIND != 0:
        in_bounds = (i < Sq) & (j < Sk)
        mask = tl.load(mask_ptr + i.to(tl.int64) * stride_maskm + j.to(tl.int64) * stride_maskn,
                       mask=in_bounds, other=0)
        if MASK_KIND == 1:
            # SDPA's boolean convention: True means "may attend".
            s = tl.where(mask != 0, s, float("-inf"))
        else:
            # torch adds the mask after scaling: S = qk * scale + mask. A finite mask value must
            # stay finite in base 2: the float32 minimum, a common "masked" value, times log2(e)
            # would overflow to -inf and turn a row that torch averages uniformly (every score
            # equally minimal) into a fully hidden one. -inf stays -inf.
            bias = mask.to(s.dtype)
            s += tl.where(bias == float("-inf"), bias, tl.maximum(bias, MASK_FLOOR) * log2e)
    if CHECK_KEYS:
        s = tl.where(j < Sk, s, float("-inf"))
    if APPLY_CAUSAL:
        # Top-left aligned, as torch's tril(ones(Sq, Sk)): key j is visible to query i iff j <= i.
        s = tl.where(j <= i, s, float("-inf"))
    return s


@triton.jit
def _dropout_scale(seed, row, i, j, Sk, dropout_p, inv_keep):
    """Z for a tile: 1 / (1 - p) where the element is kept, 0 where it is dropped.

    `row` is (b * Hq + h) * Sq, so the counter (row + i) * Sk + j numbers the elements of the
    (B, Hq, Sq, Sk) attention matrix, in int64, whichever kernel and tile shape asks.
    """
    offset = (row + i.to(tl.int64)) * Sk + j.to(tl.int64)
    return tl.where(tl.rand(seed, offset) >= dropout_p, inv_keep, 0.0)


@triton.jit
def _load_row_stats(lse_ptr, delta_ptr, i, Sq):
    """lse and delta of query rows i. Rows past Sq, and fully masked rows (lse = -inf), get
    lse = +inf, which makes every P of theirs exactly 0 in exp2(S - lse)."""
    lse = tl.load(lse_ptr + i, mask=i < Sq, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    delta = tl.load(delta_ptr + i, mask=i < Sq, other=0.0)
    return lse, delta


@triton.jit
def _load_scales(scales_ptr):
    """(scale, scale * log2 e, log2 e, 1 / (1 - dropout_p)), in the accumulator dtype."""
    return tl.load(scales_ptr), tl.load(scales_ptr + 1), tl.load(scales_ptr + 2), tl.load(scales_ptr + 3)


@triton.jit
def _program_ids(num_row_blocks, heads):
    """(row block, batch, head) of this program from a flat grid (no 65535 limit on B * H).

    Row blocks run last-first: under is_causal the last query blocks have the most keys, and
    starting them first balances the tail of the launch.
    """
    pid = tl.program_id(0)
    bh = pid // num_row_blocks
    return num_row_blocks - 1 - pid % num_row_blocks, bh // heads, bh % heads


@triton.jit
def _head_slice(base, S, D, stride_s, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, TMA: tl.constexpr):
    """What the kernels read one (b, h) slice, S rows of D, through: a tensor descriptor of
    [BLOCK_S, BLOCK_D] blocks, whose loads are TMA copies on Hopper, when TMA; else `base`, the
    slice's first element, for pointer loads. (TMA needs unit stride along D and 16-byte aligned
    rows: the launch functions check, `tma_eligible`.)"""
    if TMA:
        return tl.make_tensor_descriptor(base, shape=[S, D], strides=[stride_s, 1], block_shape=[BLOCK_S, BLOCK_D])
    else:
        return base


@triton.jit
def _load_rows(source, start, S, D, stride_s, stride_d, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
               TMA: tl.constexpr):
    """Rows [start, start + BLOCK_S) x columns [0, BLOCK_D) of a slice from `_head_slice`, zero
    past S rows and D columns (a descriptor's out-of-bounds fill, or the load's mask)."""
    if TMA:
        return source.load([start, 0])
    else:
        rows = start + tl.arange(0, BLOCK_S)
        cols = tl.arange(0, BLOCK_D)
        return tl.load(source + rows.to(tl.int64)[:, None] * stride_s + cols[None, :] * stride_d,
                       mask=(rows < S)[:, None] & (cols < D)[None, :], other=0.0)


@triton.jit
def _tile_2d(base, rows, cols, stride_r, stride_c, num_rows, num_cols):
    """Pointers and mask of a [rows, cols] tile of a 2-D strided slice (rows: int index vector)."""
    ptrs = base + rows.to(tl.int64)[:, None] * stride_r + cols.to(tl.int64)[None, :] * stride_c
    return ptrs, (rows < num_rows)[:, None] & (cols < num_cols)[None, :]


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------


@triton.jit
def _forward_tiles(
    acc, l_i, m_i, q, k_source, v_source, mask_base, seed, row,
    offs_m, n_begin, n_end, Sq, Sk, D, DV,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_maskm, stride_maskn,
    qk_scale2, log2e, inv_keep, dropout_p,
    MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, CHECK_KEYS: tl.constexpr, APPLY_CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr, TMA: tl.constexpr,
):
    """Online softmax over key blocks [n_begin, n_end): returns the updated (acc, l, m)."""
    for n_start in range(n_begin, n_end, BLOCK_N):
        offs_n = n_start + tl.arange(0, BLOCK_N)
        # k^T as a [BLOCK_D, BLOCK_N] tile: the dot reads the loaded k tile transposed.
        kt = tl.trans(_load_rows(k_source, n_start, Sk, D, stride_kn, stride_kd, BLOCK_N, BLOCK_D, TMA))
        qk = dot_accumulate(q, kt, tl.zeros([BLOCK_M, BLOCK_N], dtype=acc.dtype), INPUT_PRECISION,
                            UPCAST_OPERANDS)
        s = _scores(qk, offs_m[:, None], offs_n[None, :], Sq, Sk, mask_base, stride_maskm, stride_maskn,
                    qk_scale2, log2e, MASK_KIND, CHECK_KEYS, APPLY_CAUSAL)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with no visible key so far has m = -inf; subtracting 0 instead keeps its p = 0
        # rather than exp2(-inf + inf) = nan.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_shift[:, None])
        alpha = tl.math.exp2(m_i - m_shift)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            # The normaliser l sums the undropped p: dropout acts on softmax(S), after normalising.
            p = p * _dropout_scale(seed, row, offs_m[:, None], offs_n[None, :], Sk, dropout_p, inv_keep)
        v = _load_rows(v_source, n_start, Sk, DV, stride_vn, stride_vd, BLOCK_N, BLOCK_DV, TMA)
        acc = acc * alpha[:, None]
        acc = dot_accumulate(p.to(v.dtype), v, acc, INPUT_PRECISION, UPCAST_OPERANDS)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _causal_key_ranges(m_block, Sq, Sk, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """Key ranges of a query block: [0, n_full) needs no bounds or causal selects, [n_full, n_end)
    does, and keys from n_end on are hidden from every row of the block."""
    if IS_CAUSAL:
        first_row = m_block * BLOCK_M
        n_end = tl.minimum(Sk, tl.minimum(first_row + BLOCK_M, Sq))
        # A key block is wholly visible when its last key is <= the block's first row.
        n_full = tl.minimum(first_row + 1, Sk) // BLOCK_N * BLOCK_N
    else:
        n_end = Sk
        n_full = Sk // BLOCK_N * BLOCK_N
    return n_full, n_end


@triton.jit
def attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, mask_ptr, seed_ptr, scales_ptr,
    Sq, Sk, D, DV, Hq, group,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_maskb, stride_maskh, stride_maskm, stride_maskn,
    dropout_p,
    MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr, TMA: tl.constexpr,
):
    # The block count comes from BLOCK_M here, not from the launch: the autotuner may pick the tile.
    m_block, b, h = _program_ids(tl.cdiv(Sq, BLOCK_M), Hq)
    kv_h = h // group
    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    _, qk_scale2, log2e, inv_keep = _load_scales(scales_ptr)
    seed = tl.load(seed_ptr)

    q_source = _head_slice(q_ptr + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh, Sq, D, stride_qm,
                           BLOCK_M, BLOCK_D, TMA)
    q = _load_rows(q_source, m_block * BLOCK_M, Sq, D, stride_qm, stride_qd, BLOCK_M, BLOCK_D, TMA)
    k_source = _head_slice(k_ptr + b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh, Sk, D, stride_kn,
                           BLOCK_N, BLOCK_D, TMA)
    v_source = _head_slice(v_ptr + b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh, Sk, DV, stride_vn,
                           BLOCK_N, BLOCK_DV, TMA)
    mask_base = mask_ptr + b.to(tl.int64) * stride_maskb + h.to(tl.int64) * stride_maskh
    row = (b * Hq + h).to(tl.int64) * Sq

    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=ACC_DTYPE)
    l_i = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=ACC_DTYPE)
    n_full, n_end = _causal_key_ranges(m_block, Sq, Sk, BLOCK_M, BLOCK_N, IS_CAUSAL)
    acc, l_i, m_i = _forward_tiles(
        acc, l_i, m_i, q, k_source, v_source, mask_base, seed, row, offs_m, 0, n_full, Sq, Sk, D, DV,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_maskm, stride_maskn,
        qk_scale2, log2e, inv_keep, dropout_p,
        MASK_KIND, DROPOUT, False, False, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, INPUT_PRECISION, UPCAST_OPERANDS, TMA)
    acc, l_i, m_i = _forward_tiles(
        acc, l_i, m_i, q, k_source, v_source, mask_base, seed, row, offs_m, n_full, n_end, Sq, Sk, D, DV,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_maskm, stride_maskn,
        qk_scale2, log2e, inv_keep, dropout_p,
        MASK_KIND, DROPOUT, True, IS_CAUSAL, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, INPUT_PRECISION, UPCAST_OPERANDS, TMA)

    # A row that sees no key at all (l = 0) outputs 0, as torch's math backend does, and keeps
    # lse = -inf, which the backward reads as "no gradient".
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs, o_mask = _tile_2d(o_ptr + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh,
                              offs_m, offs_dv, stride_om, stride_od, Sq, DV)
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=o_mask)
    tl.store(lse_ptr + row + offs_m, m_i + tl.math.log2(l_safe), mask=offs_m < Sq)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------


@triton.jit
def attention_backward_preprocess_kernel(
    o_ptr, do_ptr, delta_ptr, Sq, DV, Hq, num_m_blocks,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # delta_i = sum_d dO_id O_id = sum_j P_ij dP_ij (docs/attention.md): one number per query row.
    m_block, b, h = _program_ids(num_m_blocks, Hq)
    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    o_ptrs, mask = _tile_2d(o_ptr + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh,
                            offs_m, offs_dv, stride_om, stride_od, Sq, DV)
    do_ptrs, _ = _tile_2d(do_ptr + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh,
                          offs_m, offs_dv, stride_dom, stride_dod, Sq, DV)
    o = tl.load(o_ptrs, mask=mask, other=0.0).to(ACC_DTYPE)
    do = tl.load(do_ptrs, mask=mask, other=0.0).to(ACC_DTYPE)
    tl.store(delta_ptr + (b * Hq + h).to(tl.int64) * Sq + offs_m, tl.sum(o * do, axis=1), mask=offs_m < Sq)


@triton.jit
def _dkdv_tiles(
    dk, dv, k, v, q_source, do_source, lse_base, delta_base, mask_base, seed, row,
    offs_n, m_begin, m_end, Sq, Sk, D, DV,
    stride_qm, stride_qd, stride_dom, stride_dod, stride_maskm, stride_maskn,
    qk_scale2, log2e, inv_keep, dropout_p,
    MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, APPLY_CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr, TMA: tl.constexpr,
):
    """dK and dV of one key block from query blocks [m_begin, m_end) of one query head.

    Tiles are transposed, [BLOCK_N keys, BLOCK_M queries], so that P^T and dS^T come out of the
    dots directly. Keys past Sk need no select: their rows of dK and dV are never stored.
    """
    for m_start in range(m_begin, m_end, BLOCK_M):
        offs_m = m_start + tl.arange(0, BLOCK_M)
        qt = tl.trans(_load_rows(q_source, m_start, Sq, D, stride_qm, stride_qd, BLOCK_M, BLOCK_D, TMA))
        lse, delta = _load_row_stats(lse_base, delta_base, offs_m, Sq)
        kq = dot_accumulate(k, qt, tl.zeros([BLOCK_N, BLOCK_M], dtype=dk.dtype), INPUT_PRECISION,
                            UPCAST_OPERANDS)
        st = _scores(kq, offs_m[None, :], offs_n[:, None], Sq, Sk, mask_base, stride_maskm, stride_maskn,
                     qk_scale2, log2e, MASK_KIND, False, APPLY_CAUSAL)
        pt = tl.math.exp2(st - lse[None, :])
        do = _load_rows(do_source, m_start, Sq, DV, stride_dom, stride_dod, BLOCK_M, BLOCK_DV, TMA)
        # dP^T = v dO^T, the gradient of the (dropped) probabilities.
        dpt = dot_accumulate(v, tl.trans(do), tl.zeros([BLOCK_N, BLOCK_M], dtype=dk.dtype), INPUT_PRECISION,
                             UPCAST_OPERANDS)
        if DROPOUT:
            zt = _dropout_scale(seed, row, offs_m[None, :], offs_n[:, None], Sk, dropout_p, inv_keep)
            # dV = (P o Z)^T dO; the mask passes the gradient back through Z: dP = (dO v^T) o Z.
            dv = dot_accumulate((pt * zt).to(do.dtype), do, dv, INPUT_PRECISION, UPCAST_OPERANDS)
            dpt = dpt * zt
        else:
            dv = dot_accumulate(pt.to(do.dtype), do, dv, INPUT_PRECISION, UPCAST_OPERANDS)
        # Softmax backward: dS = P o (dP - delta).
        dst = pt * (dpt - delta[None, :])
        dk = dot_accumulate(dst.to(qt.dtype), tl.trans(qt), dk, INPUT_PRECISION, UPCAST_OPERANDS)
    return dk, dv


@triton.jit
def attention_backward_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, mask_ptr, seed_ptr, scales_ptr,
    Sq, Sk, D, DV, Hq, Hkv, group,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_maskb, stride_maskh, stride_maskm, stride_maskn,
    dropout_p,
    MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr, TMA: tl.constexpr,
):
    n_block, b, kv_h = _program_ids(tl.cdiv(Sk, BLOCK_N), Hkv)
    offs_n = n_block * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    scale, qk_scale2, log2e, inv_keep = _load_scales(scales_ptr)
    seed = tl.load(seed_ptr)

    k_source = _head_slice(k_ptr + b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh, Sk, D, stride_kn,
                           BLOCK_N, BLOCK_D, TMA)
    v_source = _head_slice(v_ptr + b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh, Sk, DV, stride_vn,
                           BLOCK_N, BLOCK_DV, TMA)
    k = _load_rows(k_source, n_block * BLOCK_N, Sk, D, stride_kn, stride_kd, BLOCK_N, BLOCK_D, TMA)
    v = _load_rows(v_source, n_block * BLOCK_N, Sk, DV, stride_vn, stride_vd, BLOCK_N, BLOCK_DV, TMA)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC_DTYPE)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=ACC_DTYPE)

    # Under is_causal only queries i >= the block's first key see it; the query blocks that
    # straddle the diagonal need the causal select, those wholly below it do not.
    if IS_CAUSAL:
        m_first = (n_block * BLOCK_N) // BLOCK_M * BLOCK_M
        m_diagonal_end = tl.minimum(tl.cdiv(n_block * BLOCK_N + BLOCK_N, BLOCK_M) * BLOCK_M, Sq)
    else:
        m_first = 0
        m_diagonal_end = 0
    # The G query heads that share this key/value head, in a fixed order: GQA's sum over heads
    # happens in registers, deterministic and without atomics.
    for g in range(0, group):
        h = kv_h * group + g
        q_source = _head_slice(q_ptr + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh, Sq, D, stride_qm,
                               BLOCK_M, BLOCK_D, TMA)
        do_source = _head_slice(do_ptr + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh, Sq, DV,
                                stride_dom, BLOCK_M, BLOCK_DV, TMA)
        row = (b * Hq + h).to(tl.int64) * Sq
        mask_base = mask_ptr + b.to(tl.int64) * stride_maskb + h.to(tl.int64) * stride_maskh
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_source, do_source, lse_ptr + row, delta_ptr + row, mask_base, seed, row,
            offs_n, m_first, m_diagonal_end, Sq, Sk, D, DV,
            stride_qm, stride_qd, stride_dom, stride_dod, stride_maskm, stride_maskn,
            qk_scale2, log2e, inv_keep, dropout_p,
            MASK_KIND, DROPOUT, IS_CAUSAL, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, INPUT_PRECISION, UPCAST_OPERANDS,
            TMA)
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_source, do_source, lse_ptr + row, delta_ptr + row, mask_base, seed, row,
            offs_n, tl.maximum(m_first, m_diagonal_end), Sq, Sq, Sk, D, DV,
            stride_qm, stride_qd, stride_dom, stride_dod, stride_maskm, stride_maskn,
            qk_scale2, log2e, inv_keep, dropout_p,
            MASK_KIND, DROPOUT, False, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, INPUT_PRECISION, UPCAST_OPERANDS, TMA)

    # S = q k^T * scale: the scale comes out of the sum once, here.
    dk_ptrs, dk_mask = _tile_2d(dk_ptr + b.to(tl.int64) * stride_dkb + kv_h.to(tl.int64) * stride_dkh,
                                offs_n, offs_d, stride_dkn, stride_dkd, Sk, D)
    dv_ptrs, dv_mask = _tile_2d(dv_ptr + b.to(tl.int64) * stride_dvb + kv_h.to(tl.int64) * stride_dvh,
                                offs_n, offs_dv, stride_dvn, stride_dvd, Sk, DV)
    tl.store(dk_ptrs, (dk * scale).to(dk_ptr.dtype.element_ty), mask=dk_mask)
    tl.store(dv_ptrs, dv.to(dv_ptr.dtype.element_ty), mask=dv_mask)


@triton.jit
def _dq_tiles(
    dq, q, do, lse, delta, k_source, v_source, mask_base, ds_base, seed, row,
    offs_m, n_begin, n_end, Sq, Sk, D, DV,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_maskm, stride_maskn,
    qk_scale2, log2e, inv_keep, dropout_p,
    MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, STORE_DS: tl.constexpr,
    CHECK_KEYS: tl.constexpr, APPLY_CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr, TMA: tl.constexpr,
):
    """dQ of one query block from key blocks [n_begin, n_end); optionally stores dS."""
    for n_start in range(n_begin, n_end, BLOCK_N):
        offs_n = n_start + tl.arange(0, BLOCK_N)
        key_ok = offs_n < Sk
        kt = tl.trans(_load_rows(k_source, n_start, Sk, D, stride_kn, stride_kd, BLOCK_N, BLOCK_D, TMA))
        vt = tl.trans(_load_rows(v_source, n_start, Sk, DV, stride_vn, stride_vd, BLOCK_N, BLOCK_DV, TMA))
        qk = dot_accumulate(q, kt, tl.zeros([BLOCK_M, BLOCK_N], dtype=dq.dtype), INPUT_PRECISION,
                            UPCAST_OPERANDS)
        s = _scores(qk, offs_m[:, None], offs_n[None, :], Sq, Sk, mask_base, stride_maskm, stride_maskn,
                    qk_scale2, log2e, MASK_KIND, CHECK_KEYS, APPLY_CAUSAL)
        p = tl.math.exp2(s - lse[:, None])
        dp = dot_accumulate(do, vt, tl.zeros([BLOCK_M, BLOCK_N], dtype=dq.dtype), INPUT_PRECISION,
                            UPCAST_OPERANDS)
        if DROPOUT:
            dp = dp * _dropout_scale(seed, row, offs_m[:, None], offs_n[None, :], Sk, dropout_p, inv_keep)
        ds = p * (dp - delta[:, None])
        if STORE_DS:
            # dS is the gradient of the additive mask itself (S = q k^T * scale + mask).
            tl.store(ds_base + offs_m.to(tl.int64)[:, None] * Sk + offs_n[None, :], ds.to(ds_base.dtype.element_ty),
                     mask=(offs_m < Sq)[:, None] & key_ok[None, :])
        dq = dot_accumulate(ds.to(kt.dtype), tl.trans(kt), dq, INPUT_PRECISION, UPCAST_OPERANDS)
    return dq


@triton.jit
def attention_backward_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, ds_ptr, mask_ptr, seed_ptr, scales_ptr,
    Sq, Sk, D, DV, Hq, group,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_maskb, stride_maskh, stride_maskm, stride_maskn,
    dropout_p,
    MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, STORE_DS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr, TMA: tl.constexpr,
):
    m_block, b, h = _program_ids(tl.cdiv(Sq, BLOCK_M), Hq)
    kv_h = h // group
    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    scale, qk_scale2, log2e, inv_keep = _load_scales(scales_ptr)
    seed = tl.load(seed_ptr)

    q_source = _head_slice(q_ptr + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh, Sq, D, stride_qm,
                           BLOCK_M, BLOCK_D, TMA)
    q = _load_rows(q_source, m_block * BLOCK_M, Sq, D, stride_qm, stride_qd, BLOCK_M, BLOCK_D, TMA)
    do_source = _head_slice(do_ptr + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh, Sq, DV, stride_dom,
                            BLOCK_M, BLOCK_DV, TMA)
    do = _load_rows(do_source, m_block * BLOCK_M, Sq, DV, stride_dom, stride_dod, BLOCK_M, BLOCK_DV, TMA)
    row = (b * Hq + h).to(tl.int64) * Sq
    lse, delta = _load_row_stats(lse_ptr + row, delta_ptr + row, offs_m, Sq)
    k_source = _head_slice(k_ptr + b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh, Sk, D, stride_kn,
                           BLOCK_N, BLOCK_D, TMA)
    v_source = _head_slice(v_ptr + b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh, Sk, DV, stride_vn,
                           BLOCK_N, BLOCK_DV, TMA)
    mask_base = mask_ptr + b.to(tl.int64) * stride_maskb + h.to(tl.int64) * stride_maskh
    # dS, when asked for, is a dense (B, Hq, Sq, Sk) buffer, zero where a key is never visited.
    ds_base = ds_ptr + row * Sk

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC_DTYPE)
    n_full, n_end = _causal_key_ranges(m_block, Sq, Sk, BLOCK_M, BLOCK_N, IS_CAUSAL)
    dq = _dq_tiles(
        dq, q, do, lse, delta, k_source, v_source, mask_base, ds_base, seed, row, offs_m, 0, n_full, Sq, Sk, D, DV,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_maskm, stride_maskn,
        qk_scale2, log2e, inv_keep, dropout_p, MASK_KIND, DROPOUT, STORE_DS, False, False,
        BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, INPUT_PRECISION, UPCAST_OPERANDS, TMA)
    dq = _dq_tiles(
        dq, q, do, lse, delta, k_source, v_source, mask_base, ds_base, seed, row, offs_m, n_full, n_end, Sq, Sk, D, DV,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_maskm, stride_maskn,
        qk_scale2, log2e, inv_keep, dropout_p, MASK_KIND, DROPOUT, STORE_DS, True, IS_CAUSAL,
        BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, INPUT_PRECISION, UPCAST_OPERANDS, TMA)

    dq_ptrs, dq_mask = _tile_2d(dq_ptr + b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh,
                                offs_m, offs_d, stride_dqm, stride_dqd, Sq, D)
    tl.store(dq_ptrs, (dq * scale).to(dq_ptr.dtype.element_ty), mask=dq_mask)


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def _head_block(d: int) -> int:
    # tl.dot needs every tile side >= 16; head dims that are not powers of two are padded and masked.
    return max(16, _next_pow2(d))


def _configs(table, alternatives, dtype, head_block, rows, cols):
    """The configs of one pass, as `launch_tuned` takes them: the table's (BLOCK_M, BLOCK_N,
    num_warps, num_stages) for this dtype and head dim, clamped to small problems, then, where
    nothing was clamped, the pass's 16-bit GPU alternatives."""
    size = dtype.itemsize
    by_head = table[size]
    head = min(b for b in by_head if b >= head_block)
    block_rows, block_cols, num_warps, num_stages = by_head[head]
    if backend.interpreting():
        block_rows = block_cols = INTERPRETER_BLOCK
    tiles = [(_block(rows, 16, block_rows), _block(cols, 16, block_cols), num_warps, num_stages)]
    if size == 2 and tiles[0] == by_head[head]:
        tiles += alternatives.get(head, [])
    names = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
    return [dict(zip(names, config)) for config in tiles]


def _scales(scale, dropout_p, dtype, device):
    """scale, scale * log2 e, log2 e and 1 / (1 - p) in the accumulator dtype (see the module doc).

    Kept from call to call for each (scale, p, dtype, device): on a GPU a fresh one is a copy
    from pageable host memory, which waits for the host on every call. The kernels only read it.
    Not kept while a dispatch mode (torch.compile's fake tensors) is active or on meta tensors,
    where a tensor made now belongs to that context alone.
    """
    if torch._C._len_torch_dispatch_stack() or device.type == "meta":
        return _new_scales(scale, dropout_p, dtype, device)
    return _kept_scales(scale, dropout_p, dtype, device)


def _new_scales(scale, dropout_p, dtype, device):
    inv_keep = 1.0 / (1.0 - dropout_p) if dropout_p < 1.0 else 0.0
    values = [scale, scale * math.log2(math.e), math.log2(math.e), inv_keep]
    return torch.tensor(values, dtype=accumulator_torch_dtype(dtype), device=device)


_kept_scales = functools.lru_cache(maxsize=64)(_new_scales)


def _mask_args(mask, like):
    """(tensor, 4 strides, MASK_KIND) of an attn_mask already expanded to (B, Hq, Sq, Sk)."""
    if mask is None:
        return like, (0, 0, 0, 0), NO_MASK
    if mask.dtype == torch.bool and like.dtype == torch.float64:
        # Triton 3.6 cannot compile an fp64 tl.dot whose operand depends on an 8-bit load ("fp64
        # don't support largeK MMA"), so fp64 takes a boolean mask in its additive form, 0 / -inf,
        # which gives the same scores. Only the mask's own (unbroadcast) elements are converted.
        compact = mask[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in mask.stride())]
        additive = torch.zeros(compact.shape, dtype=like.dtype, device=mask.device).masked_fill_(~compact, float("-inf"))
        mask = additive.expand(mask.shape)
    return mask, mask.stride(), BOOL_MASK if mask.dtype == torch.bool else ADDITIVE_MASK


def tma_eligible(*tensors) -> bool:
    """Whether every (B, H, S, D) operand can be read through tensor descriptors (TMA): unit
    stride along D, and a 16-byte aligned start and batch, head and row steps. A slice of a
    fused QKV projection qualifies when its head dim does; other layouts take pointer loads."""
    for t in tensors:
        size = t.element_size()
        try:
            address = t.data_ptr()
        except RuntimeError:
            # A fake tensor (torch.compile's tracing) has no address; its launch runs no kernel.
            address = t.storage_offset() * size
        # A descriptor needs every dim at least 1 (head dim 0 is uniform attention, on pointers).
        if address % 16 or min(t.shape[2], t.shape[3]) == 0 or (t.shape[3] > 1 and t.stride(3) != 1):
            return False
        # The row stride is the descriptor's own, checked whatever S is; the batch and head
        # steps only move its start, and a dim of size 1 never steps.
        if (t.stride(2) * size) % 16 or any(t.shape[d] > 1 and (t.stride(d) * size) % 16 for d in range(2)):
            return False
    return True


def _common(q, k, v, dropout_p, *loaded):
    """The options every attention kernel takes; `loaded` are the operands it reads by tiles."""
    tma = tma_eligible(*loaded)
    if tma and not backend.interpreting():
        ensure_scratch_allocator()
    return dict(ACC_DTYPE=accumulator_dtype(q.dtype), BLOCK_D=_head_block(q.shape[-1]),
                BLOCK_DV=_head_block(v.shape[-1]), DROPOUT=dropout_p > 0, TMA=tma,
                **dot_options(q.dtype, _allow_tf32(TF32_FLAG)))


def forward(q, k, v, mask, is_causal, scale, dropout_p, seed, out_order=(0, 1, 2, 3)):
    """O and lse of attention over 4-D q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv).

    Any strides (slices of a fused QKV projection are read in place). `mask` is None, or a bool or
    floating tensor expanded to (B, Hq, Sq, Sk) (stride 0 on broadcast dims). `seed` is a
    one-element int64 tensor (used when dropout_p > 0). Returns o (B, Hq, Sq, Dv) and lse
    (B, Hq, Sq) in base 2, fp32 (fp64 for fp64 inputs). o is stored with its dims in memory in
    `out_order` (outermost first): (0, 2, 1, 3) gives the (B, Sq, Hq, Dv) layout that an output
    projection reads as (B, Sq, Hq * Dv) without a copy.
    """
    B, Hq, Sq, D = q.shape
    Hkv, Sk, DV = k.shape[1], k.shape[2], v.shape[3]
    shape = (B, Hq, Sq, DV)
    o = torch.empty([shape[d] for d in out_order], device=q.device, dtype=q.dtype).permute(
        *[out_order.index(d) for d in range(4)])
    lse = torch.empty((B, Hq, Sq), device=q.device, dtype=accumulator_torch_dtype(q.dtype))
    if o.numel() == 0 or Sk == 0:
        # No key at all: every row is fully masked, which outputs 0 (as torch does).
        return o.zero_(), lse.fill_(float("-inf"))
    options = _common(q, k, v, dropout_p, q, k, v)
    configs = _configs(FORWARD_TILES, GPU_ALTERNATIVES["forward"], q.dtype,
                       max(options["BLOCK_D"], options["BLOCK_DV"]), Sq, Sk)
    mask_arg, mask_strides, mask_kind = _mask_args(mask, q)

    def grid(meta):
        return (cdiv(Sq, meta["BLOCK_M"]) * B * Hq,)

    launch_tuned(attention_forward_kernel, grid, configs, key=("Sq", "Sk", "D", "DV"))(
        q, k, v, o, lse, mask_arg, seed, _scales(scale, dropout_p, q.dtype, q.device),
        Sq, Sk, D, DV, Hq, Hq // Hkv,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(), *mask_strides, float(dropout_p),
        MASK_KIND=mask_kind, IS_CAUSAL=bool(is_causal), **options,
    )
    return o, lse


def backward(do, q, k, v, o, lse, mask, is_causal, scale, dropout_p, seed,
             need_q=True, need_kv=True, need_mask=False):
    """(dq, dk, dv, dmask) of attention, each None unless asked for.

    dmask is the dense (B, Hq, Sq, Sk) gradient dS of an additive mask, in the accumulator dtype;
    the caller sums it over the mask's broadcast dims. Costs one such buffer, so it is computed
    only when the mask requires grad.
    """
    B, Hq, Sq, D = q.shape
    Hkv, Sk, DV = k.shape[1], k.shape[2], v.shape[3]
    acc_torch = accumulator_torch_dtype(q.dtype)
    # The kernels write every element of dq, dk and dv; dmask stays 0 where a key is never visited.
    empty = B * Hq * Sq == 0 or Sk == 0
    new = torch.zeros_like if empty else torch.empty_like
    dq = new(q, memory_format=torch.contiguous_format) if need_q else None
    dk = new(k, memory_format=torch.contiguous_format) if need_kv else None
    dv = new(v, memory_format=torch.contiguous_format) if need_kv else None
    dmask = torch.zeros((B, Hq, Sq, Sk), device=q.device, dtype=acc_torch) if need_mask else None
    if empty:
        return dq, dk, dv, dmask

    options = _common(q, k, v, dropout_p, q, k, v, do)
    mask_arg, mask_strides, mask_kind = _mask_args(mask, q)
    scales = _scales(scale, dropout_p, q.dtype, q.device)
    delta = torch.empty((B, Hq, Sq), device=q.device, dtype=acc_torch)
    num_m_blocks = cdiv(Sq, PREPROCESS_BLOCK_M)
    launch(attention_backward_preprocess_kernel, (num_m_blocks * B * Hq,))(
        o, do, delta, Sq, DV, Hq, num_m_blocks, *o.stride(), *do.stride(),
        BLOCK_M=PREPROCESS_BLOCK_M, BLOCK_DV=options["BLOCK_DV"], ACC_DTYPE=options["ACC_DTYPE"], num_warps=4,
    )
    head_block = max(options["BLOCK_D"], options["BLOCK_DV"])
    if need_kv:
        def dkdv_grid(meta):
            return (cdiv(Sk, meta["BLOCK_N"]) * B * Hkv,)

        configs = _configs(DKDV_TILES, GPU_ALTERNATIVES["dkdv"], q.dtype, head_block, Sq, Sk)
        launch_tuned(attention_backward_dkdv_kernel, dkdv_grid, configs, key=("Sq", "Sk", "D", "DV"))(
            q, k, v, do, lse, delta, dk, dv, mask_arg, seed, scales,
            Sq, Sk, D, DV, Hq, Hkv, Hq // Hkv,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(), *mask_strides,
            float(dropout_p), MASK_KIND=mask_kind, IS_CAUSAL=bool(is_causal), **options,
        )
    if need_q or need_mask:
        dq_out = dq if need_q else torch.empty_like(q, memory_format=torch.contiguous_format)
        def dq_grid(meta):
            return (cdiv(Sq, meta["BLOCK_M"]) * B * Hq,)

        configs = _configs(DQ_TILES, GPU_ALTERNATIVES["dq"], q.dtype, head_block, Sq, Sk)
        launch_tuned(attention_backward_dq_kernel, dq_grid, configs, key=("Sq", "Sk", "D", "DV"))(
            q, k, v, do, lse, delta, dq_out, dmask if need_mask else delta, mask_arg, seed, scales,
            Sq, Sk, D, DV, Hq, Hq // Hkv,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq_out.stride(), *mask_strides,
            float(dropout_p), MASK_KIND=mask_kind, IS_CAUSAL=bool(is_causal), STORE_DS=need_mask, **options,
        )
    return dq, dk, dv, dmask
