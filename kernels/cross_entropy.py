"""Softmax cross-entropy, log-softmax and NLL loss kernels, forward and backward.

Layout
------
Every kernel sees its input as a matrix of rows x classes. The class dim (dim 1 for the losses,
`dim` for log_softmax) has stride ``stride_c``; the dims before it merge into one "outer" axis
and the dims after it into one "inner" axis, so that row r starts at

    (r // inner) * stride_o + (r % inner) * stride_i

(N, C) logits are N rows with inner = 1; (N, C, H, W) logits are N*H*W rows with inner = H*W,
read where they lie, without the transpose copy that a (N*H*W, C) view would need. Per-row
tensors (targets, per-row losses, upstream gradients) are addressed the same way with their own
strides. `row_layout` finds the strides (with `merge_dims` of kernels/_common.py); a view whose
outer or inner dims do not merge into one axis is copied once by the launchers.

Kernels (docs/cross_entropy.md derives each one):
  log_softmax_forward_kernel     pass 1: online log-sum-exp over column blocks; pass 2: x - lse
  log_softmax_backward_kernel    pass 1: sum(dy); pass 2: dx = dy - softmax * sum(dy)
  cross_entropy_forward_kernel   one pass over the logits: online log-sum-exp, the target logit
                                 and the label-smoothing sum; stores the per-row lse (fp32)
                                 and the loss, never the probabilities
  cross_entropy_backward_kernel  dx = g * (softmax * a - smoothed weighted one-hot), with the
                                 softmax recomputed from the logits and the saved lse
  nll_loss_forward_kernel        gathers -weight[t] * input[t] per row
  nll_loss_backward_kernel       writes -weight[t] * g at the target column, zeros elsewhere
  loss_reduce_kernel             'sum' and 'mean': the per-program partials summed in a fixed
                                 order (deterministic, no atomics)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels._common import (_next_pow2, accumulator_dtype, accumulator_torch_dtype, cached_plan, cdiv,
                                        launch, merge_dims)

# Elements per tile: wide enough for full-width loads, small enough for registers (16 fp32 values
# per thread at 8 warps). A row longer than MAX_BLOCK_C is walked in column blocks; tests lower
# MAX_BLOCK_C so that tiny rows take several blocks too.
TILE_ELEMENTS = 4096
MAX_BLOCK_C = 4096
# Rows per tile when the class dim is strided (NCHW-like logits): rows are the contiguous axis.
STRIDED_CLASS_BLOCK_R = 64
REDUCE_BLOCK = 1024

REDUCTIONS = ("none", "mean", "sum")


# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _row_offsets(rows, inner, stride_o, stride_i):
    # int64: logits can hold more than 2**31 elements even when the row count fits in int32.
    return (rows // inner).to(tl.int64) * stride_o + (rows % inner).to(tl.int64) * stride_i


@triton.jit
def _column_block(c_start, C, stride_c, BLOCK_C: tl.constexpr):
    """Class indices of one column block, their in-bounds mask, and their int64 offsets."""
    cols = c_start + tl.arange(0, BLOCK_C)
    return cols, cols < C, cols.to(tl.int64) * stride_c


@triton.jit
def _online_logsumexp(m, s, x, col_mask):
    """Fold a [BLOCK_R, BLOCK_C] block into each row's running max m and s = sum(exp(x - m)).

    When the max grows, the old sum is rescaled by exp(m_old - m_new), so one pass over the
    row suffices and no exp ever overflows. Columns past C count as -inf; rows past R were
    loaded as zeros and stay finite (they are never stored).
    """
    x = tl.where(col_mask[None, :], x, float("-inf"))
    new_m = tl.maximum(m, tl.max(x, axis=1))
    # A row whose values so far are all -inf (-inf logits) keeps new_m = -inf; shifting by 0
    # then keeps exp() away from (-inf) - (-inf) = nan, and its sum stays 0.
    shift = tl.where(new_m == float("-inf"), 0.0, new_m)
    s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - shift[:, None]), axis=1)
    return new_m, s


@triton.jit
def _class_weights(weight_ptr, cols, col_mask, HAS_WEIGHT: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """The class weights of one column block; without a weight tensor every class weighs 1."""
    if HAS_WEIGHT:
        return tl.load(weight_ptr + cols, mask=col_mask, other=0.0).to(ACC_DTYPE)
    return tl.where(col_mask, 1.0, 0.0).to(ACC_DTYPE)


@triton.jit
def _targets(target_ptr, weight_ptr, rows, row_mask, inner, stride_to, stride_ti, ignore_index,
             HAS_WEIGHT: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """Each row's class index, whether it counts (in bounds and not ignore_index), and its class
    weight w_t, which is 0 for rows that do not count."""
    target = tl.load(target_ptr + _row_offsets(rows, inner, stride_to, stride_ti), mask=row_mask, other=0)
    target = target.to(tl.int64)
    valid = row_mask & (target != ignore_index)
    if HAS_WEIGHT:
        w_target = tl.load(weight_ptr + target, mask=valid, other=0.0).to(ACC_DTYPE)
    else:
        w_target = tl.where(valid, 1.0, 0.0).to(ACC_DTYPE)
    return target, valid, w_target


@triton.jit
def _store_loss(loss, w_target, valid, rows, row_mask, loss_ptr, part_loss_ptr, part_weight_ptr,
                PER_ROW_LOSS: tl.constexpr):
    """reduction='none' stores each row's loss; 'sum' and 'mean' store this program's partial sums
    of the loss and of w_t (the denominator of 'mean'), for loss_reduce_kernel."""
    loss = tl.where(valid, loss, 0.0)
    if PER_ROW_LOSS:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=row_mask)
    else:
        pid = tl.program_id(0)
        tl.store(part_loss_ptr + pid, tl.sum(loss, axis=0))
        tl.store(part_weight_ptr + pid, tl.sum(w_target, axis=0))


@triton.jit
def _divide_by_total_weight(value, total_weight):
    """'mean': value / W. When no row carries weight (W = 0) torch's mean is 0/0, nan in the loss
    and in the gradient of every counted row, even where label smoothing makes value nonzero."""
    return tl.where(total_weight == 0.0, float("nan"), value / total_weight)


@triton.jit
def _upstream_gradient(grad_ptr, total_weight_ptr, rows, row_mask, inner, stride_go, stride_gi,
                       MEAN: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """dL/d(loss of each row). 'none' hands one gradient per row; 'sum' and 'mean' hand a scalar,
    read through strides 0, which 'mean' divides by the total weight of the counted rows."""
    g = tl.load(grad_ptr + _row_offsets(rows, inner, stride_go, stride_gi), mask=row_mask, other=0.0)
    g = g.to(ACC_DTYPE)
    if MEAN:
        g = _divide_by_total_weight(g, tl.load(total_weight_ptr))
    return g


# ----------------------------------------------------------------------------------------------
# log_softmax
# ----------------------------------------------------------------------------------------------


@triton.jit
def log_softmax_forward_kernel(
    x_ptr, y_ptr, lse_ptr,
    R, C, inner,
    stride_xo, stride_xi, stride_xc,
    stride_yo, stride_yi, stride_yc,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    x_rows = _row_offsets(rows, inner, stride_xo, stride_xi)
    y_rows = _row_offsets(rows, inner, stride_yo, stride_yi)

    # Pass 1: log-sum-exp of each row, one column block at a time.
    m = tl.full([BLOCK_R], float("-inf"), ACC_DTYPE)
    s = tl.zeros([BLOCK_R], ACC_DTYPE)
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, x_cols = _column_block(c_start, C, stride_xc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + x_rows[:, None] + x_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        m, s = _online_logsumexp(m, s, x, col_mask)
    lse = m + tl.log(s)
    tl.store(lse_ptr + rows, lse, mask=row_mask)

    # Pass 2: log softmax(x) = x - lse.
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, x_cols = _column_block(c_start, C, stride_xc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + x_rows[:, None] + x_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        y_cols = cols.to(tl.int64) * stride_yc
        tl.store(y_ptr + y_rows[:, None] + y_cols[None, :], (x - lse[:, None]).to(y_ptr.dtype.element_ty),
                 mask=mask)


@triton.jit
def log_softmax_backward_kernel(
    x_ptr, lse_ptr, dy_ptr, dx_ptr,
    R, C, inner,
    stride_xo, stride_xi, stride_xc,
    stride_dyo, stride_dyi, stride_dyc,
    stride_dxo, stride_dxi, stride_dxc,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    x_rows = _row_offsets(rows, inner, stride_xo, stride_xi)
    dy_rows = _row_offsets(rows, inner, stride_dyo, stride_dyi)
    dx_rows = _row_offsets(rows, inner, stride_dxo, stride_dxi)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)

    # Pass 1: every output of the row depends on every input through lse, so each dx needs sum(dy).
    sum_dy = tl.zeros([BLOCK_R], ACC_DTYPE)
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, dy_cols = _column_block(c_start, C, stride_dyc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        dy = tl.load(dy_ptr + dy_rows[:, None] + dy_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        sum_dy += tl.sum(dy, axis=1)

    # Pass 2: dx = dy - softmax(x) * sum(dy), the softmax recomputed from x and the saved lse.
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, x_cols = _column_block(c_start, C, stride_xc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + x_rows[:, None] + x_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        dy_cols = cols.to(tl.int64) * stride_dyc
        dy = tl.load(dy_ptr + dy_rows[:, None] + dy_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        softmax = tl.exp(x - lse[:, None])
        dx = dy - softmax * sum_dy[:, None]
        dx_cols = cols.to(tl.int64) * stride_dxc
        tl.store(dx_ptr + dx_rows[:, None] + dx_cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# cross_entropy: fused log-softmax + NLL, with class weights, ignore_index and label smoothing
# ----------------------------------------------------------------------------------------------


@triton.jit
def cross_entropy_forward_kernel(
    logits_ptr, target_ptr, weight_ptr, weight_sum_ptr, smoothing_ptr, lse_ptr, loss_ptr, part_loss_ptr,
    part_weight_ptr, R, C, inner, ignore_index,
    stride_xo, stride_xi, stride_xc,
    stride_to, stride_ti,
    HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr, PER_ROW_LOSS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    x_rows = _row_offsets(rows, inner, stride_xo, stride_xi)
    target, valid, w_target = _targets(target_ptr, weight_ptr, rows, row_mask, inner, stride_to, stride_ti,
                                       ignore_index, HAS_WEIGHT, ACC_DTYPE)
    # The target logit: one gathered element per counted row (an ignored row's target may be any value).
    x_target = tl.load(logits_ptr + x_rows + target * stride_xc, mask=valid, other=0.0).to(ACC_DTYPE)

    m = tl.full([BLOCK_R], float("-inf"), ACC_DTYPE)
    s = tl.zeros([BLOCK_R], ACC_DTYPE)
    # sum_c w_c * (x_c - x_t): the smoothing term, taken relative to the target logit so that it
    # stays small (no cancellation against lse * sum(w) when all logits share a large offset).
    spread = tl.zeros([BLOCK_R], ACC_DTYPE)
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, x_cols = _column_block(c_start, C, stride_xc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(logits_ptr + x_rows[:, None] + x_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        m, s = _online_logsumexp(m, s, x, col_mask)
        if SMOOTHING:
            w = _class_weights(weight_ptr, cols, col_mask, HAS_WEIGHT, ACC_DTYPE)
            spread += tl.sum(w[None, :] * (x - x_target[:, None]), axis=1)
    log_s = tl.log(s)
    tl.store(lse_ptr + rows, m + log_s, mask=row_mask)

    # -log softmax(x)_t, with the max subtracted first: exact even when |lse| is large, where
    # lse itself carries the rounding of its own magnitude.
    nll = (m - x_target) + log_s
    if SMOOTHING:
        w_sum = tl.load(weight_sum_ptr).to(ACC_DTYPE)
        keep, eps_per_class = tl.load(smoothing_ptr), tl.load(smoothing_ptr + 1)
        # (1-eps) w_t (lse - x_t) + (eps/C) sum_c w_c (lse - x_c), regrouped around x_t
        loss = (keep * w_target + eps_per_class * w_sum) * nll - eps_per_class * spread
    else:
        loss = w_target * nll
    _store_loss(loss, w_target, valid, rows, row_mask, loss_ptr, part_loss_ptr, part_weight_ptr, PER_ROW_LOSS)


@triton.jit
def cross_entropy_backward_kernel(
    logits_ptr, target_ptr, weight_ptr, weight_sum_ptr, smoothing_ptr, lse_ptr, grad_ptr, total_weight_ptr,
    dx_ptr, R, C, inner, ignore_index,
    stride_xo, stride_xi, stride_xc,
    stride_to, stride_ti,
    stride_go, stride_gi,
    stride_dxo, stride_dxi, stride_dxc,
    HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr, MEAN: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    x_rows = _row_offsets(rows, inner, stride_xo, stride_xi)
    dx_rows = _row_offsets(rows, inner, stride_dxo, stride_dxi)
    target, valid, w_target = _targets(target_ptr, weight_ptr, rows, row_mask, inner, stride_to, stride_ti,
                                       ignore_index, HAS_WEIGHT, ACC_DTYPE)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    g = _upstream_gradient(grad_ptr, total_weight_ptr, rows, row_mask, inner, stride_go, stride_gi,
                           MEAN, ACC_DTYPE)

    # dloss/dx_c = softmax_c * a - t_c, with a the total weight of the smoothed target row and
    # t the smoothed, weighted one-hot: (1-eps) w_t at the target plus eps/C w_c everywhere.
    if SMOOTHING:
        keep, eps_per_class = tl.load(smoothing_ptr), tl.load(smoothing_ptr + 1)
        on_target = keep * w_target
        softmax_scale = on_target + eps_per_class * tl.load(weight_sum_ptr).to(ACC_DTYPE)
    else:
        on_target = w_target
        softmax_scale = w_target
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, x_cols = _column_block(c_start, C, stride_xc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(logits_ptr + x_rows[:, None] + x_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        softmax = tl.exp(x - lse[:, None])
        dloss = softmax * softmax_scale[:, None] - tl.where(cols[None, :] == target[:, None], on_target[:, None], 0.0)
        if SMOOTHING:
            dloss -= eps_per_class * _class_weights(weight_ptr, cols, col_mask, HAS_WEIGHT, ACC_DTYPE)[None, :]
        # Ignored rows get exactly 0, even where g is inf or nan (a 'mean' over zero total weight).
        dx = tl.where(valid[:, None], g[:, None] * dloss, 0.0)
        dx_cols = cols.to(tl.int64) * stride_dxc
        tl.store(dx_ptr + dx_rows[:, None] + dx_cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# nll_loss on log-probabilities
# ----------------------------------------------------------------------------------------------


@triton.jit
def nll_loss_forward_kernel(
    input_ptr, target_ptr, weight_ptr, loss_ptr, part_loss_ptr, part_weight_ptr,
    R, inner, ignore_index,
    stride_xo, stride_xi, stride_xc,
    stride_to, stride_ti,
    HAS_WEIGHT: tl.constexpr, PER_ROW_LOSS: tl.constexpr, BLOCK_R: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    target, valid, w_target = _targets(target_ptr, weight_ptr, rows, row_mask, inner, stride_to, stride_ti,
                                       ignore_index, HAS_WEIGHT, ACC_DTYPE)
    x_rows = _row_offsets(rows, inner, stride_xo, stride_xi)
    x_target = tl.load(input_ptr + x_rows + target * stride_xc, mask=valid, other=0.0).to(ACC_DTYPE)
    _store_loss(-w_target * x_target, w_target, valid, rows, row_mask, loss_ptr, part_loss_ptr, part_weight_ptr,
                PER_ROW_LOSS)


@triton.jit
def nll_loss_backward_kernel(
    target_ptr, weight_ptr, grad_ptr, total_weight_ptr, dx_ptr,
    R, C, inner, ignore_index,
    stride_to, stride_ti,
    stride_go, stride_gi,
    stride_dxo, stride_dxi, stride_dxc,
    HAS_WEIGHT: tl.constexpr, MEAN: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    target, valid, w_target = _targets(target_ptr, weight_ptr, rows, row_mask, inner, stride_to, stride_ti,
                                       ignore_index, HAS_WEIGHT, ACC_DTYPE)
    g = _upstream_gradient(grad_ptr, total_weight_ptr, rows, row_mask, inner, stride_go, stride_gi,
                           MEAN, ACC_DTYPE)
    on_target = tl.where(valid, -w_target * g, 0.0)
    dx_rows = _row_offsets(rows, inner, stride_dxo, stride_dxi)
    # The whole row is written (zeros off the target), so dx needs no separate zero-fill.
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, dx_cols = _column_block(c_start, C, stride_dxc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        dx = tl.where(cols[None, :] == target[:, None], on_target[:, None], 0.0)
        tl.store(dx_ptr + dx_rows[:, None] + dx_cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# 'sum' and 'mean'
# ----------------------------------------------------------------------------------------------


@triton.jit
def loss_reduce_kernel(part_loss_ptr, part_weight_ptr, loss_ptr, total_weight_ptr, P,
                       MEAN: tl.constexpr, BLOCK_P: tl.constexpr, ACC_DTYPE: tl.constexpr):
    # One program; the partials are visited in the same order on every call (deterministic).
    total_loss = tl.zeros([BLOCK_P], ACC_DTYPE)
    total_weight = tl.zeros([BLOCK_P], ACC_DTYPE)
    for p_start in range(0, P, BLOCK_P):
        p = p_start + tl.arange(0, BLOCK_P)
        total_loss += tl.load(part_loss_ptr + p, mask=p < P, other=0.0)
        total_weight += tl.load(part_weight_ptr + p, mask=p < P, other=0.0)
    loss = tl.sum(total_loss, axis=0)
    weight = tl.sum(total_weight, axis=0)
    tl.store(total_weight_ptr, weight)
    if MEAN:
        # torch's denominator: the summed class weights of the counted rows.
        loss = _divide_by_total_weight(loss, weight)
    tl.store(loss_ptr, loss.to(loss_ptr.dtype.element_ty))


# ----------------------------------------------------------------------------------------------
# cross_entropy against class probabilities (a floating-point target shaped like the logits)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _weighted_probabilities(target_ptr, t_rows, cols, mask, col_mask, stride_tc, weight_ptr, keep, per_class,
                            HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """w_c * t'_c of one [BLOCK_R, BLOCK_C] block, t' = keep * t + per_class the smoothed target
    (keep = 1 - eps, per_class = eps / C); 0 outside the tensor, so padding adds to no sum."""
    t = tl.load(target_ptr + t_rows[:, None] + cols.to(tl.int64)[None, :] * stride_tc, mask=mask, other=0.0)
    t = t.to(ACC_DTYPE)
    if SMOOTHING:
        t = t * keep + per_class
    w = _class_weights(weight_ptr, cols, col_mask, HAS_WEIGHT, ACC_DTYPE)
    return tl.where(mask, t * w[None, :], 0.0)


@triton.jit
def cross_entropy_probs_forward_kernel(
    logits_ptr, target_ptr, weight_ptr, smoothing_ptr, lse_ptr, mass_ptr, loss_ptr, part_loss_ptr, part_weight_ptr,
    R, C, inner,
    stride_xo, stride_xi, stride_xc,
    stride_to, stride_ti, stride_tc,
    HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr, PER_ROW_LOSS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # loss = sum_c w_c t'_c (lse - x_c). Two passes: the log-sum-exp, then the weighted sum,
    # which needs lse before it can start.
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    x_rows = _row_offsets(rows, inner, stride_xo, stride_xi)
    t_rows = _row_offsets(rows, inner, stride_to, stride_ti)

    m = tl.full([BLOCK_R], float("-inf"), ACC_DTYPE)
    s = tl.zeros([BLOCK_R], ACC_DTYPE)
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, x_cols = _column_block(c_start, C, stride_xc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(logits_ptr + x_rows[:, None] + x_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        m, s = _online_logsumexp(m, s, x, col_mask)
    log_s = tl.log(s)
    tl.store(lse_ptr + rows, m + log_s, mask=row_mask)

    # lse - x_c as (m - x_c) + log s: exact even when all logits share a large offset. `mass`,
    # sum_c w_c t'_c, scales the softmax in the backward; it is kept per row in fp32.
    keep, per_class = tl.load(smoothing_ptr), tl.load(smoothing_ptr + 1)
    loss = tl.zeros([BLOCK_R], ACC_DTYPE)
    mass = tl.zeros([BLOCK_R], ACC_DTYPE)
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, x_cols = _column_block(c_start, C, stride_xc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(logits_ptr + x_rows[:, None] + x_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        wt = _weighted_probabilities(target_ptr, t_rows, cols, mask, col_mask, stride_tc, weight_ptr,
                                     keep, per_class, HAS_WEIGHT, SMOOTHING, ACC_DTYPE)
        loss += tl.sum(wt * ((m[:, None] - x) + log_s[:, None]), axis=1)
        mass += tl.sum(wt, axis=1)
    tl.store(mass_ptr + rows, mass, mask=row_mask)
    # 'mean' divides by the number of rows, whatever the weights: each row counts 1.
    _store_loss(loss, tl.where(row_mask, 1.0, 0.0).to(ACC_DTYPE), row_mask, rows, row_mask, loss_ptr,
                part_loss_ptr, part_weight_ptr, PER_ROW_LOSS)


@triton.jit
def cross_entropy_probs_backward_kernel(
    logits_ptr, target_ptr, weight_ptr, smoothing_ptr, lse_ptr, mass_ptr, grad_ptr, total_weight_ptr, dx_ptr,
    dtarget_ptr, R, C, inner,
    stride_xo, stride_xi, stride_xc,
    stride_to, stride_ti, stride_tc,
    stride_go, stride_gi,
    stride_dxo, stride_dxi, stride_dxc,
    stride_dto, stride_dti, stride_dtc,
    HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr, MEAN: tl.constexpr,
    NEED_DX: tl.constexpr, NEED_DTARGET: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # dloss/dx_c = softmax_c * mass - w_c t'_c;   dloss/dt_c = -(1 - eps) w_c log softmax(x)_c.
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    x_rows = _row_offsets(rows, inner, stride_xo, stride_xi)
    t_rows = _row_offsets(rows, inner, stride_to, stride_ti)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    mass = tl.load(mass_ptr + rows, mask=row_mask, other=0.0)
    g = _upstream_gradient(grad_ptr, total_weight_ptr, rows, row_mask, inner, stride_go, stride_gi,
                           MEAN, ACC_DTYPE)
    keep, per_class = tl.load(smoothing_ptr), tl.load(smoothing_ptr + 1)
    target_scale = g * keep
    for c_start in range(0, C, BLOCK_C):
        cols, col_mask, x_cols = _column_block(c_start, C, stride_xc, BLOCK_C)
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(logits_ptr + x_rows[:, None] + x_cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        if NEED_DX:
            wt = _weighted_probabilities(target_ptr, t_rows, cols, mask, col_mask, stride_tc, weight_ptr,
                                         keep, per_class, HAS_WEIGHT, SMOOTHING, ACC_DTYPE)
            dx = g[:, None] * (tl.exp(x - lse[:, None]) * mass[:, None] - wt)
            dx_offsets = (_row_offsets(rows, inner, stride_dxo, stride_dxi)[:, None]
                          + cols.to(tl.int64)[None, :] * stride_dxc)
            tl.store(dx_ptr + dx_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if NEED_DTARGET:
            w = _class_weights(weight_ptr, cols, col_mask, HAS_WEIGHT, ACC_DTYPE)
            dt = -target_scale[:, None] * w[None, :] * (x - lse[:, None])
            dt_offsets = (_row_offsets(rows, inner, stride_dto, stride_dti)[:, None]
                          + cols.to(tl.int64)[None, :] * stride_dtc)
            tl.store(dtarget_ptr + dt_offsets, dt.to(dtarget_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch planning
# ----------------------------------------------------------------------------------------------


@cached_plan  # each launch function asks for several runs of dims
def _one_axis(sizes, strides):
    """(size, stride) of a run of dims that steps through memory as one axis, or None if it cannot."""
    axes = merge_dims(sizes, range(len(sizes)), [strides])
    if len(axes) > 1:
        return None
    return (axes[0][0], axes[0][1][0]) if axes else (1, 0)


def row_layout(shape, strides, dim):
    """How a tensor maps onto rows x classes along `dim`: ``(rows, inner, (stride_o, stride_i, stride_c))``.

    The dims before `dim` merge into the outer axis and those after it into the inner one;
    returns None when either run does not merge (the tensor must be copied first).
    """
    outer = _one_axis(shape[:dim], strides[:dim])
    inner = _one_axis(shape[dim + 1:], strides[dim + 1:])
    if outer is None or inner is None:
        return None
    return outer[0] * inner[0], inner[0], (outer[1], inner[1], strides[dim])


def _addressable(t, dim):
    """`t` with a layout that `row_layout` accepts, and that layout."""
    layout = row_layout(t.shape, t.stride(), dim)
    if layout is None:
        # Only views whose leading or trailing dims need more than one stride each get here (a
        # slice of a slice); dense tensors, their transposes and channels_last are read in place.
        t = t.contiguous()
        layout = row_layout(t.shape, t.stride(), dim)
    return t, layout


def _per_row_strides(t):
    """(stride_o, stride_i) of a per-row tensor of shape (N, *spatial); copies it if needed."""
    if t.dim() == 0:
        return t, (0, 0)  # a scalar upstream gradient is read by every row
    spatial = _one_axis(t.shape[1:], t.stride()[1:])
    if spatial is None:
        # Spatial dims that need more than one stride (a slice of a slice): the copy is 1/C the
        # size of the logits.
        t = t.contiguous()
        spatial = _one_axis(t.shape[1:], t.stride()[1:])
    return t, (t.stride(0), spatial[1])


def plan_blocks(rows: int, C: int, stride_c: int):
    """(BLOCK_R, BLOCK_C, num_warps): the memory-contiguous axis of the tile is the wide one.

    Not autotuned: every tile shape would add to the compile time on a fresh GPU machine, and a
    streaming kernel is not sensitive to it once loads are wide.
    """
    if C == 1 or stride_c == 1:
        block_c = min(_next_pow2(C), MAX_BLOCK_C)
        block_r = min(_next_pow2(rows), max(1, TILE_ELEMENTS // block_c))
    else:
        # Classes are far apart in memory and rows are adjacent (NCHW-like logits).
        block_r = min(_next_pow2(rows), STRIDED_CLASS_BLOCK_R)
        block_c = min(_next_pow2(C), MAX_BLOCK_C, max(1, TILE_ELEMENTS // block_r))
    num_warps = 8 if block_r * block_c >= 2048 else 4
    return block_r, block_c, num_warps


def _launch_kwargs(rows, C, stride_c):
    block_r, block_c, num_warps = plan_blocks(rows, C, stride_c)
    return (cdiv(rows, block_r),), dict(BLOCK_R=block_r, BLOCK_C=block_c, num_warps=num_warps)


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def log_softmax_forward(x, dim):
    """log_softmax of `x` along `dim`. Returns ``(y, lse)``: y like x, lse per row in fp32 (fp64 for fp64)."""
    y = torch.empty_like(x)
    if x.numel() == 0:
        # Nothing to read, and a layout of zero-size dims need not merge; an empty row's lse is -inf.
        rows = x.shape[:dim].numel() * x.shape[dim + 1:].numel()
        return y, torch.full((rows,), float("-inf"), device=x.device, dtype=accumulator_torch_dtype(x.dtype))
    x, (R, inner, (sxo, sxi, sxc)) = _addressable(x, dim)
    lse = torch.empty(R, device=x.device, dtype=accumulator_torch_dtype(x.dtype))
    if row_layout(y.shape, y.stride(), dim) is None:
        y = torch.empty_like(x)
    _, _, (syo, syi, syc) = row_layout(y.shape, y.stride(), dim)
    C = x.shape[dim]
    grid, blocks = _launch_kwargs(R, C, sxc)
    launch(log_softmax_forward_kernel, grid)(
        x, y, lse, R, C, inner, sxo, sxi, sxc, syo, syi, syc,
        **blocks, ACC_DTYPE=accumulator_dtype(x.dtype),
    )
    return y, lse


def log_softmax_backward(dy, x, lse, dim):
    """dx = dy - softmax(x) * sum(dy) along `dim`, with softmax(x) = exp(x - lse)."""
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx
    x, (R, inner, (sxo, sxi, sxc)) = _addressable(x, dim)
    # dy arrives in whatever layout autograd produced (expanded, transposed); most are read in place.
    dy, (_, _, (sdyo, sdyi, sdyc)) = _addressable(dy, dim)
    if row_layout(dx.shape, dx.stride(), dim) is None:
        dx = torch.empty_like(x)
    _, _, (sdxo, sdxi, sdxc) = row_layout(dx.shape, dx.stride(), dim)
    C = x.shape[dim]
    grid, blocks = _launch_kwargs(R, C, sxc)
    launch(log_softmax_backward_kernel, grid)(
        x, lse, dy, dx, R, C, inner, sxo, sxi, sxc, sdyo, sdyi, sdyc, sdxo, sdxi, sdxc,
        **blocks, ACC_DTYPE=accumulator_dtype(x.dtype),
    )
    return dx


def _loss_buffers(per_row_shape, device, dtype, reduction, num_programs):
    """The output of the forward kernels: per-row losses for 'none', partial sums otherwise."""
    acc_torch = accumulator_torch_dtype(dtype)
    if reduction == "none":
        loss = torch.empty(per_row_shape, device=device, dtype=dtype)
        return loss, loss, loss
    # At least one slot, so that an empty batch still hands the reduction valid pointers.
    parts = torch.empty((2, max(num_programs, 1)), device=device, dtype=acc_torch)
    return torch.empty((), device=device, dtype=dtype), parts[0], parts[1]


def _reduce(loss, part_loss, part_weight, reduction, num_programs, dtype):
    """Fixed-order sum of the partials into `loss`; returns the total weight ('mean' divides by it)."""
    total_weight = torch.empty((), device=loss.device, dtype=accumulator_torch_dtype(dtype))
    if reduction != "none":
        launch(loss_reduce_kernel, (1,))(
            part_loss, part_weight, loss, total_weight, num_programs,
            MEAN=reduction == "mean", BLOCK_P=min(_next_pow2(num_programs), REDUCE_BLOCK),
            ACC_DTYPE=accumulator_dtype(dtype),
        )
    return total_weight


def _weight_sum(weight, classes, dtype, device):
    """sum_c w_c, which label smoothing needs: C when there is no weight tensor."""
    if weight is None:
        return torch.full((), classes, device=device, dtype=accumulator_torch_dtype(dtype))
    return weight.sum(dtype=accumulator_torch_dtype(dtype))


def cross_entropy_forward(logits, target, weight, reduction, ignore_index, label_smoothing):
    """Cross-entropy of (N, C, *spatial) logits against (N, *spatial) class indices.

    Returns ``(loss, lse, total_weight)``: the loss in the logits' dtype (per row for 'none', a
    scalar otherwise), the per-row log-sum-exp in fp32 (fp64 for fp64 logits) for the backward,
    and the summed weight of the counted rows (the denominator of 'mean'). Targets must already
    be in [0, C) or equal to ignore_index; `weight` is None or contiguous with C entries.
    """
    _check_reduction(reduction)
    acc_torch = accumulator_torch_dtype(logits.dtype)
    logits, (R, inner, (sxo, sxi, sxc)) = _addressable(logits, 1)
    C = logits.shape[1]
    target, (sto, sti) = _per_row_strides(target)
    grid, blocks = _launch_kwargs(R, C, sxc)
    loss, part_loss, part_weight = _loss_buffers(target.shape, target.device, logits.dtype, reduction, grid[0])
    lse = torch.empty(R, device=logits.device, dtype=acc_torch)
    smoothing = label_smoothing > 0.0
    weight_sum, coefficients = _smoothing_args(label_smoothing, weight, logits, lse)
    if R:
        launch(cross_entropy_forward_kernel, grid)(
            logits, target, weight if weight is not None else lse, weight_sum, coefficients,
            lse, loss, part_loss, part_weight, R, C, inner, ignore_index, sxo, sxi, sxc, sto, sti,
            HAS_WEIGHT=weight is not None, SMOOTHING=smoothing, PER_ROW_LOSS=reduction == "none",
            **blocks, ACC_DTYPE=accumulator_dtype(logits.dtype),
        )
    total_weight = _reduce(loss, part_loss, part_weight, reduction, grid[0], logits.dtype)
    return loss, lse, total_weight


def cross_entropy_backward(grad, logits, target, weight, lse, total_weight, reduction, ignore_index,
                           label_smoothing):
    """dloss/dlogits, in the logits' dtype and layout; `lse` and `total_weight` come from the forward."""
    _check_reduction(reduction)
    dx = torch.empty_like(logits)
    if logits.numel() == 0:
        return dx
    logits, (R, inner, (sxo, sxi, sxc)) = _addressable(logits, 1)
    if row_layout(dx.shape, dx.stride(), 1) is None:
        dx = torch.empty_like(logits)
    _, _, (sdxo, sdxi, sdxc) = row_layout(dx.shape, dx.stride(), 1)
    C = logits.shape[1]
    target, (sto, sti) = _per_row_strides(target)
    grad, (sgo, sgi) = _per_row_strides(grad)
    smoothing = label_smoothing > 0.0
    weight_sum, coefficients = _smoothing_args(label_smoothing, weight, logits, lse)
    grid, blocks = _launch_kwargs(R, C, sxc)
    launch(cross_entropy_backward_kernel, grid)(
        logits, target, weight if weight is not None else lse, weight_sum, coefficients,
        lse, grad, total_weight, dx, R, C, inner, ignore_index,
        sxo, sxi, sxc, sto, sti, sgo, sgi, sdxo, sdxi, sdxc,
        HAS_WEIGHT=weight is not None, SMOOTHING=smoothing, MEAN=reduction == "mean",
        **blocks, ACC_DTYPE=accumulator_dtype(logits.dtype),
    )
    return dx


def nll_loss_forward(input, target, weight, reduction, ignore_index):
    """NLL loss of (N, C, *spatial) log-probabilities. Returns ``(loss, total_weight)`` as
    `cross_entropy_forward` does; targets must already be in [0, C) or equal to ignore_index."""
    _check_reduction(reduction)
    input, (R, inner, (sxo, sxi, sxc)) = _addressable(input, 1)
    target, (sto, sti) = _per_row_strides(target)
    # One gathered element per row: a one-dimensional tile of rows.
    block_r = min(_next_pow2(R), TILE_ELEMENTS)
    num_programs = cdiv(R, block_r)
    loss, part_loss, part_weight = _loss_buffers(target.shape, target.device, input.dtype, reduction,
                                                  num_programs)
    if R:
        launch(nll_loss_forward_kernel, (num_programs,))(
            input, target, weight if weight is not None else part_loss, loss, part_loss, part_weight,
            R, inner, ignore_index, sxo, sxi, sxc, sto, sti,
            HAS_WEIGHT=weight is not None, PER_ROW_LOSS=reduction == "none", BLOCK_R=block_r,
            ACC_DTYPE=accumulator_dtype(input.dtype),
        )
    total_weight = _reduce(loss, part_loss, part_weight, reduction, num_programs, input.dtype)
    return loss, total_weight


def nll_loss_backward(grad, target, weight, total_weight, input_shape, dtype, reduction, ignore_index):
    """dloss/dinput: -weight[t] * g at each row's target column and 0 elsewhere (a dense tensor)."""
    _check_reduction(reduction)
    dx = torch.empty(input_shape, device=target.device, dtype=dtype)
    if dx.numel() == 0:
        return dx
    R, inner, (sdxo, sdxi, sdxc) = row_layout(dx.shape, dx.stride(), 1)
    C = input_shape[1]
    target, (sto, sti) = _per_row_strides(target)
    grad, (sgo, sgi) = _per_row_strides(grad)
    grid, blocks = _launch_kwargs(R, C, sdxc)
    launch(nll_loss_backward_kernel, grid)(
        target, weight if weight is not None else total_weight, grad, total_weight, dx,
        R, C, inner, ignore_index, sto, sti, sgo, sgi, sdxo, sdxi, sdxc,
        HAS_WEIGHT=weight is not None, MEAN=reduction == "mean", **blocks, ACC_DTYPE=accumulator_dtype(dtype),
    )
    return dx


def _smoothing(label_smoothing, classes, logits):
    """(1 - eps, eps / C) in the accumulator dtype: a Python float reaches a kernel as fp32, and
    fp64 gradchecks need these exact."""
    values = [1.0 - label_smoothing, label_smoothing / classes]
    return torch.tensor(values, dtype=accumulator_torch_dtype(logits.dtype), device=logits.device)


def _smoothing_args(label_smoothing, weight, logits, placeholder):
    """(sum_c w_c, (1 - eps, eps / C)) for the class-index kernels. Without smoothing they read
    neither, and `placeholder` (a tensor of the accumulator dtype) stands in for both: new tensors
    would cost allocations, and on a GPU a host-to-device copy, on every call."""
    if not label_smoothing > 0.0:  # as the callers' SMOOTHING flag reads it
        return placeholder, placeholder
    classes = logits.shape[1]
    return _weight_sum(weight, classes, logits.dtype, logits.device), _smoothing(label_smoothing, classes, logits)


def cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing):
    """Cross-entropy of (N, C, *spatial) logits against a target of class probabilities of the same shape.

    Returns ``(loss, lse, mass, rows)``: the loss in the logits' dtype (per row for 'none', a
    scalar otherwise), the per-row log-sum-exp and mass sum_c w_c t'_c in fp32 (fp64 for fp64
    logits), and the row count (the denominator of 'mean'). `weight` is None or contiguous.
    """
    _check_reduction(reduction)
    acc_torch = accumulator_torch_dtype(logits.dtype)
    per_row_shape = (logits.shape[0], *logits.shape[2:])
    R, C = torch.Size(per_row_shape).numel(), logits.shape[1]
    lse = torch.empty(R, device=logits.device, dtype=acc_torch)
    mass = torch.empty(R, device=logits.device, dtype=acc_torch)
    if logits.numel() == 0:
        # No row or no class: torch's 'none' gives zeros, 'sum' 0 and 'mean' 0/0 = nan (a
        # reduction over no partial sums, which the reduce kernel divides by a total of 0).
        loss, part_loss, part_weight = _loss_buffers(per_row_shape, logits.device, logits.dtype, reduction, 0)
        if reduction == "none":
            return loss.zero_(), lse, mass, torch.zeros((), device=logits.device, dtype=acc_torch)
        return loss, lse, mass, _reduce(loss, part_loss, part_weight, reduction, 0, logits.dtype)
    logits, (_, inner, (sxo, sxi, sxc)) = _addressable(logits, 1)
    target, (_, _, (sto, sti, stc)) = _addressable(target, 1)
    grid, blocks = _launch_kwargs(R, C, sxc)
    loss, part_loss, part_weight = _loss_buffers(per_row_shape, logits.device, logits.dtype, reduction, grid[0])
    launch(cross_entropy_probs_forward_kernel, grid)(
        logits, target, weight if weight is not None else lse, _smoothing(label_smoothing, C, logits), lse, mass,
        loss, part_loss, part_weight, R, C, inner, sxo, sxi, sxc, sto, sti, stc,
        HAS_WEIGHT=weight is not None, SMOOTHING=label_smoothing > 0.0, PER_ROW_LOSS=reduction == "none",
        **blocks, ACC_DTYPE=accumulator_dtype(logits.dtype),
    )
    rows = _reduce(loss, part_loss, part_weight, reduction, grid[0], logits.dtype)
    return loss, lse, mass, rows


def _output_like(t, dim):
    """An uninitialised tensor like `t` whose layout `row_layout` accepts along `dim`, and that layout."""
    out = torch.empty_like(t)
    if row_layout(out.shape, out.stride(), dim) is None:
        out = torch.empty_like(t, memory_format=torch.contiguous_format)
    return out, row_layout(out.shape, out.stride(), dim)[2]


def cross_entropy_probs_backward(grad, logits, target, weight, lse, mass, rows, reduction, label_smoothing,
                                 need_logits=True, need_target=True):
    """(dlogits, dtarget) of `cross_entropy_probs_forward`, each None unless asked for."""
    _check_reduction(reduction)
    dx = torch.empty_like(logits) if need_logits else None
    dtarget = torch.empty_like(target) if need_target else None
    if logits.numel() == 0 or not (need_logits or need_target):
        return dx, dtarget
    logits, (R, inner, (sxo, sxi, sxc)) = _addressable(logits, 1)
    target, (_, _, (sto, sti, stc)) = _addressable(target, 1)
    dx_strides = dt_strides = (0, 0, 0)
    if need_logits:
        dx, dx_strides = _output_like(dx, 1)
    if need_target:
        dtarget, dt_strides = _output_like(dtarget, 1)
    grad, (sgo, sgi) = _per_row_strides(grad)
    grid, blocks = _launch_kwargs(R, logits.shape[1], sxc)
    launch(cross_entropy_probs_backward_kernel, grid)(
        logits, target, weight if weight is not None else lse, _smoothing(label_smoothing, logits.shape[1], logits),
        lse, mass, grad, rows, dx if need_logits else lse, dtarget if need_target else lse,
        R, logits.shape[1], inner,
        sxo, sxi, sxc, sto, sti, stc, sgo, sgi, *dx_strides, *dt_strides,
        HAS_WEIGHT=weight is not None, SMOOTHING=label_smoothing > 0.0, MEAN=reduction == "mean",
        NEED_DX=need_logits, NEED_DTARGET=need_target, **blocks, ACC_DTYPE=accumulator_dtype(logits.dtype),
    )
    return dx, dtarget
