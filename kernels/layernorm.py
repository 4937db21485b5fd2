"""Layer normalization kernels: the forward (statistics and normalize-and-affine) and the backward.

Layout
------
LayerNorm normalizes each row of an input viewed as (M rows) x (N columns): the columns are the
trailing `normalized_shape` dims, the rows everything before them. The launchers merge adjacent
dims whose strides allow it (`merge_dims` in kernels/_common.py), so each tensor is addressed by

    row r = (outer, inner) with r = outer * rows_inner + inner   -> outer * stride_outer + inner * stride_inner
    column c                                                      -> c * stride_col

Two row axes cover the views transformers make (x.transpose(0, 1) of a (T, B, C) activation, a
slice along T) without a copy; a view that needs more, or whose normalized dims do not merge into
one stride, is copied once. Every kernel works on [BLOCK_M rows, BLOCK_N columns] tiles and loops
over column blocks, so a row of any length works (BLOCK_N is at most MAX_BLOCK_N).

Forward (`layer_norm_forward_kernel`, one program per block of rows):
  pass 1: mean and M2 of each row, one column block at a time, merged with Chan's parallel
          update (numerically safe even when |mean| >> std); stores mean and rstd = 1/sqrt(var + eps).
  pass 2: y = (x - mean) * rstd * weight + bias.

Backward (see docs/layernorm.md for the derivation):
  1. `layer_norm_backward_kernel`: a grid of (chunk of rows) x (column block). Each program
     takes the two row sums dx needs over whole rows, writes dx for its column block, and keeps
     the column sums of dy * xhat and dy over its chunk of rows in registers: one row of the
     [chunks, N] partials for dweight and dbias.
  2. `sum_partials` (kernels/reduction.py): sums the partials in a fixed order (deterministic, no
     atomics) into dweight and dbias.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tritonprop.kernels._common import (_block, accumulator_dtype, accumulator_torch_dtype, cdiv, chan_merge,
                                        launch, merge_dims, parallel_programs)
from tritonprop.kernels.reduction import sum_partials

# Elements per tile: large enough to keep loads wide, small enough for registers (16 fp32
# values per thread at 8 warps).
TILE_ELEMENTS = 4096
# The backward's, smaller (see plan_backward_blocks).
BACKWARD_TILE_ELEMENTS = 1024
# Widest column block. Rows up to this length are handled by one block per row; the backward of
# longer rows re-reads each row once per column block for its two row sums (see the kernel).
MAX_BLOCK_N = 4096


# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _row_offsets(rows, rows_inner, stride_outer, stride_inner):
    # int64: a tensor may hold more than 2**31 elements even when each index fits in int32.
    rows = rows.to(tl.int64)
    return (rows // rows_inner) * stride_outer + (rows % rows_inner) * stride_inner


@triton.jit
def _tile(row_offsets, row_mask, col_start, N, stride_col, BLOCK_N: tl.constexpr):
    """Columns, offsets and mask of the [BLOCK_M, BLOCK_N] tile of the given rows at col_start."""
    cols = col_start + tl.arange(0, BLOCK_N)
    offsets = row_offsets[:, None] + cols.to(tl.int64)[None, :] * stride_col
    return cols, offsets, row_mask[:, None] & (cols < N)[None, :]


@triton.jit
def _column_param(param_ptr, stride_param, cols, N, default, HAS_PARAM: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """weight or bias at `cols` as a [BLOCK_N] vector; an absent one acts as the constant `default`.

    The parameter is read by its stride, so a strided or expanded (stride-0) one needs no copy.
    """
    if HAS_PARAM:
        return tl.load(param_ptr + cols.to(tl.int64) * stride_param, mask=cols < N, other=default).to(ACC_DTYPE)
    return tl.full(cols.shape, default, ACC_DTYPE)


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------


@triton.jit
def layer_norm_forward_kernel(
    x_ptr, y_ptr, weight_ptr, bias_ptr, mean_ptr, rstd_ptr,
    M, N, rows_inner, eps,
    stride_x_outer, stride_x_inner, stride_x_col,
    stride_y_outer, stride_y_inner, stride_y_col,
    stride_weight, stride_bias,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    x_rows = _row_offsets(rows, rows_inner, stride_x_outer, stride_x_inner)

    # Pass 1: (count, mean, M2) of each row, one column block at a time.
    count = tl.zeros([BLOCK_M], ACC_DTYPE)
    mean = tl.zeros([BLOCK_M], ACC_DTYPE)
    m2 = tl.zeros([BLOCK_M], ACC_DTYPE)
    for col_start in range(0, N, BLOCK_N):
        _, offsets, mask = _tile(x_rows, row_mask, col_start, N, stride_x_col, BLOCK_N)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        block_count = tl.sum(mask.to(ACC_DTYPE), axis=1)
        block_mean = tl.sum(x, axis=1) / tl.maximum(block_count, 1.0)
        centered = tl.where(mask, x - block_mean[:, None], 0.0)
        block_m2 = tl.sum(centered * centered, axis=1)
        count, mean, m2 = chan_merge(count, mean, m2, block_count, block_mean, block_m2)

    # The biased variance, as torch normalizes with.
    rstd = 1.0 / tl.sqrt(m2 / N + eps)
    tl.store(mean_ptr + rows, mean, mask=row_mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)

    # Pass 2: normalize and apply the elementwise affine map.
    y_rows = _row_offsets(rows, rows_inner, stride_y_outer, stride_y_inner)
    for col_start in range(0, N, BLOCK_N):
        cols, x_offsets, mask = _tile(x_rows, row_mask, col_start, N, stride_x_col, BLOCK_N)
        x = tl.load(x_ptr + x_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        w = _column_param(weight_ptr, stride_weight, cols, N, 1.0, HAS_WEIGHT, ACC_DTYPE)
        b = _column_param(bias_ptr, stride_bias, cols, N, 0.0, HAS_BIAS, ACC_DTYPE)
        xhat = (x - mean[:, None]) * rstd[:, None]
        y = xhat * w[None, :] + b[None, :]
        _, y_offsets, _ = _tile(y_rows, row_mask, col_start, N, stride_y_col, BLOCK_N)
        tl.store(y_ptr + y_offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------


@triton.jit
def _row_means_of_wdy(x_ptr, dy_ptr, weight_ptr, x_rows, dy_rows, row_mask, mean, rstd, N, stride_x_col,
                      stride_dy_col, stride_weight, HAS_WEIGHT: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """mean(dy * w) and mean(dy * w * xhat) over whole rows longer than one block, one column
    block at a time (the first pass of the backward when N > BLOCK_N)."""
    sum_wdy = tl.zeros([BLOCK_M], ACC_DTYPE)
    sum_wdy_xhat = tl.zeros([BLOCK_M], ACC_DTYPE)
    for row_col_start in range(0, N, BLOCK_N):
        row_cols, x_offsets, mask = _tile(x_rows, row_mask, row_col_start, N, stride_x_col, BLOCK_N)
        _, dy_offsets, _ = _tile(dy_rows, row_mask, row_col_start, N, stride_dy_col, BLOCK_N)
        x = tl.load(x_ptr + x_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        dy = tl.load(dy_ptr + dy_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        row_w = _column_param(weight_ptr, stride_weight, row_cols, N, 1.0, HAS_WEIGHT, ACC_DTYPE)
        # Masked positions have dy = 0, so they add nothing to either sum.
        xhat = (x - mean[:, None]) * rstd[:, None]
        wdy = dy * row_w[None, :]
        sum_wdy += tl.sum(wdy, axis=1)
        sum_wdy_xhat += tl.sum(wdy * xhat, axis=1)
    mean_wdy = sum_wdy / N
    mean_wdy_xhat = sum_wdy_xhat / N
    return mean_wdy, mean_wdy_xhat


@triton.jit
def layer_norm_backward_kernel(
    x_ptr, dy_ptr, dx_ptr, weight_ptr, mean_ptr, rstd_ptr, part_dweight_ptr, part_dbias_ptr,
    M, N, rows_inner, row_blocks_per_chunk,
    stride_x_outer, stride_x_inner, stride_x_col,
    stride_dy_outer, stride_dy_inner, stride_dy_col,
    stride_dx_outer, stride_dx_inner, stride_dx_col,
    stride_weight,
    HAS_WEIGHT: tl.constexpr, COMPUTE_DX: tl.constexpr,
    COMPUTE_DWEIGHT: tl.constexpr, COMPUTE_DBIAS: tl.constexpr,
    WHOLE_ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # Program (chunk, column block): rows of the chunk, columns of the block. Owning a column
    # block lets the dweight/dbias sums stay in registers for the whole chunk.
    chunk = tl.program_id(0)
    col_start = tl.program_id(1) * BLOCK_N
    cols = col_start + tl.arange(0, BLOCK_N)
    w = _column_param(weight_ptr, stride_weight, cols, N, 1.0, HAS_WEIGHT, ACC_DTYPE)

    sum_dy_xhat = tl.zeros([BLOCK_N], ACC_DTYPE)
    sum_dy = tl.zeros([BLOCK_N], ACC_DTYPE)
    first_block = chunk * row_blocks_per_chunk
    last_block = tl.minimum(first_block + row_blocks_per_chunk, tl.cdiv(M, BLOCK_M))
    for row_block in range(first_block, last_block):
        rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < M
        mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        x_rows = _row_offsets(rows, rows_inner, stride_x_outer, stride_x_inner)
        dy_rows = _row_offsets(rows, rows_inner, stride_dy_outer, stride_dy_inner)

        # This program's column block of the rows.
        _, x_offsets, mask = _tile(x_rows, row_mask, col_start, N, stride_x_col, BLOCK_N)
        _, dy_offsets, _ = _tile(dy_rows, row_mask, col_start, N, stride_dy_col, BLOCK_N)
        x = tl.load(x_ptr + x_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        dy = tl.load(dy_ptr + dy_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        xhat = (x - mean[:, None]) * rstd[:, None]
        if COMPUTE_DX:
            if WHOLE_ROWS:
                # The block holds whole rows (N <= BLOCK_N): the row means come from the tile in
                # hand, with no second read of x and dy (masked positions have dy = 0).
                wdy = dy * w[None, :]
                mean_wdy = tl.sum(wdy, axis=1) / N
                mean_wdy_xhat = tl.sum(wdy * xhat, axis=1) / N
            else:
                mean_wdy, mean_wdy_xhat = _row_means_of_wdy(
                    x_ptr, dy_ptr, weight_ptr, x_rows, dy_rows, row_mask, mean, rstd, N, stride_x_col, stride_dy_col,
                    stride_weight, HAS_WEIGHT, BLOCK_M, BLOCK_N, ACC_DTYPE)
            # The paths through the row's mean and variance add the two subtracted terms.
            dx = rstd[:, None] * (dy * w[None, :] - mean_wdy[:, None] - xhat * mean_wdy_xhat[:, None])
            dx_rows = _row_offsets(rows, rows_inner, stride_dx_outer, stride_dx_inner)
            _, dx_offsets, _ = _tile(dx_rows, row_mask, col_start, N, stride_dx_col, BLOCK_N)
            tl.store(dx_ptr + dx_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        sum_dy_xhat += tl.sum(dy * xhat, axis=0)
        sum_dy += tl.sum(dy, axis=0)

    partial = chunk.to(tl.int64) * N + cols
    if COMPUTE_DWEIGHT:
        tl.store(part_dweight_ptr + partial, sum_dy_xhat, mask=cols < N)
    if COMPUTE_DBIAS:
        tl.store(part_dbias_ptr + partial, sum_dy, mask=cols < N)


# ----------------------------------------------------------------------------------------------
# Launch planning
# ----------------------------------------------------------------------------------------------


def row_col_axes(shape, normalized_ndim, *strides):
    """Merge the dims of same-shaped tensors into two row axes and one column axis.

    Returns ``(rows_inner, per_tensor)`` with, for each tensor, ``(stride_outer, stride_inner,
    stride_col)``; or ``None`` when the leading dims need more than two axes or the normalized
    dims more than one (a view that must be copied first). Dims are merged only where the merge
    is valid for every tensor; size-1 dims are dropped.
    """
    split = len(shape) - normalized_ndim
    rows = merge_dims(shape, range(split), strides)
    cols = merge_dims(shape, range(split, len(shape)), strides)
    if len(rows) > 2 or len(cols) > 1:
        return None
    while len(rows) < 2:
        rows.insert(0, [1, [0] * len(strides)])
    col_strides = cols[0][1] if cols else [0] * len(strides)
    per_tensor = [(rows[0][1][k], rows[1][1][k], col_strides[k]) for k in range(len(strides))]
    return rows[1][0], per_tensor


def plan_blocks(M: int, N: int, tile_elements: int = TILE_ELEMENTS):
    """(BLOCK_M, BLOCK_N): a whole row per column block when it fits, rows stacked up to a tile."""
    block_n = _block(N, 1, MAX_BLOCK_N)
    block_m = _block(M, 1, max(1, tile_elements // block_n))
    return block_m, block_n


def _block_kwargs(blocks):
    block_m, block_n = blocks
    # Not autotuned: each tile shape would multiply compile time on a fresh GPU machine, and
    # for a streaming kernel the warp count matters little once loads are wide.
    num_warps = 8 if block_m * block_n >= 2048 else 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps)


def plan_backward_blocks(M: int, N: int):
    """(BLOCK_M, BLOCK_N) of the backward: `plan_blocks` with rows stacked up to only
    BACKWARD_TILE_ELEMENTS. The backward holds more per element than the forward (x, dy, xhat,
    and the column sums of its chunk): at the forward's 4 x 1024 tile and 8 warps it took 128
    registers, 2 CTAs (16 warps) per SM (static sm_90 report); 1 x 1024 at 4 warps takes 56."""
    return plan_blocks(M, N, BACKWARD_TILE_ELEMENTS)


def _backward_block_kwargs(blocks):
    # About 8 elements per thread (one 16-byte load of a 16-bit row): a 4096-wide row at 16
    # warps takes 63 registers where 8 warps took 100.
    block_m, block_n = blocks
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=min(16, max(4, block_m * block_n // 256)))


def _as_vectors(*params):
    """Each parameter (normalized shape, any strides) as a vector of N elements, and its stride.

    reshape is a view wherever the normalized dims share one stride: any 1-D parameter, strided or
    expanded (stride 0), and a dense multi-dim one. Only a multi-dim parameter whose dims do not
    merge is copied, and a parameter is small. An absent one stays None, with stride 0.
    """
    vectors = [p.reshape(-1) if p is not None else None for p in params]
    return vectors, tuple(v.stride(0) if v is not None else 0 for v in vectors)


def _rows_and_cols(x, normalized_ndim):
    split = x.dim() - normalized_ndim
    return math.prod(x.shape[:split]), math.prod(x.shape[split:])


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def forward(x, normalized_ndim, weight, bias, eps, blocks=None):
    """Layer norm over the last `normalized_ndim` dims of `x`. Returns ``(y, mean, rstd)``.

    y is contiguous, as torch's is; mean and rstd hold one value per row, in fp32 (fp64 for fp64
    x). weight and bias, when given, have the normalized shape, with any strides. ``blocks``
    overrides (BLOCK_M, BLOCK_N) (tests use it to force several column blocks on small rows).
    """
    M, N = _rows_and_cols(x, normalized_ndim)
    acc_torch = accumulator_torch_dtype(x.dtype)
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    mean = torch.empty(M, device=x.device, dtype=acc_torch)
    rstd = torch.empty(M, device=x.device, dtype=acc_torch)
    if x.numel() == 0:
        return y, mean, rstd
    axes = row_col_axes(x.shape, normalized_ndim, x.stride(), y.stride())
    if axes is None:
        # A view whose leading dims need three or more strides, or whose normalized dims do not
        # share one stride, is copied once; dense inputs and common transposes never are.
        x = x.contiguous()
        axes = row_col_axes(x.shape, normalized_ndim, x.stride(), y.stride())
    rows_inner, (x_strides, y_strides) = axes
    blocks = blocks or plan_blocks(M, N)
    (weight, bias), param_strides = _as_vectors(weight, bias)
    launch(layer_norm_forward_kernel, (cdiv(M, blocks[0]),))(
        x, y, weight if weight is not None else x, bias if bias is not None else x, mean, rstd,
        M, N, rows_inner, eps, *x_strides, *y_strides, *param_strides,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        **_block_kwargs(blocks), ACC_DTYPE=accumulator_dtype(x.dtype),
    )
    return y, mean, rstd


def backward(dy, x, normalized_ndim, weight, bias, mean, rstd, need_input=True, need_weight=True, need_bias=True,
             blocks=None, chunks=None):
    """Gradients of layer norm. Returns ``(dx, dweight, dbias)``, with None for those not needed.

    ``mean`` and ``rstd`` are the ones ``forward`` returned. dweight and dbias have the dtypes of
    weight and bias (fp32 beside an fp16/bf16 input under mixed precision); bias enters only
    through its dtype. ``blocks`` and ``chunks`` override the launch plan (tests use them to
    force many partials).
    """
    M, N = _rows_and_cols(x, normalized_ndim)
    need_weight = need_weight and weight is not None
    need_bias = need_bias and bias is not None
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype) if need_input else None
    # Contiguous, whatever the parameters' strides (as torch's are).
    dweight = torch.empty(weight.shape, device=x.device, dtype=weight.dtype) if need_weight else None
    dbias = torch.empty(bias.shape, device=x.device, dtype=bias.dtype) if need_bias else None
    if x.numel() == 0:
        # No rows: the parameter gradients are empty sums.
        return dx, dweight.zero_() if need_weight else None, dbias.zero_() if need_bias else None
    tensors = [x, dy] + ([dx] if need_input else [])
    axes = row_col_axes(x.shape, normalized_ndim, *[t.stride() for t in tensors])
    if axes is None:
        # dy can arrive in any layout (autograd may hand us an expanded or transposed one), and x
        # is the caller's input, which forward may have had to copy; when they do not line up,
        # both are made contiguous.
        x, dy = x.contiguous(), dy.contiguous()
        tensors[:2] = [x, dy]
        axes = row_col_axes(x.shape, normalized_ndim, *[t.stride() for t in tensors])
    rows_inner, strides = axes
    dx_strides = strides[2] if need_input else strides[0]

    blocks = blocks or plan_backward_blocks(M, N)
    num_row_blocks = cdiv(M, blocks[0])
    num_col_blocks = cdiv(N, blocks[1])
    if chunks is None:
        # Twice the usual split: the smaller tiles leave room for 8 or more CTAs per SM.
        chunks = cdiv(2 * parallel_programs(x.device), num_col_blocks)
    row_blocks_per_chunk = cdiv(num_row_blocks, max(1, min(int(chunks), num_row_blocks)))
    P = cdiv(num_row_blocks, row_blocks_per_chunk)

    acc_torch = accumulator_torch_dtype(x.dtype)
    part_dweight = torch.empty((P, N), device=x.device, dtype=acc_torch) if need_weight else mean
    part_dbias = torch.empty((P, N), device=x.device, dtype=acc_torch) if need_bias else mean
    acc = accumulator_dtype(x.dtype)
    (weight_vector,), weight_stride = _as_vectors(weight)
    launch(layer_norm_backward_kernel, (P, num_col_blocks))(
        x, dy, dx if need_input else x, weight_vector if weight is not None else x, mean, rstd, part_dweight,
        part_dbias, M, N, rows_inner, row_blocks_per_chunk, *strides[0], *strides[1], *dx_strides, *weight_stride,
        HAS_WEIGHT=weight is not None, COMPUTE_DX=need_input, COMPUTE_DWEIGHT=need_weight, COMPUTE_DBIAS=need_bias,
        WHOLE_ROWS=num_col_blocks == 1, **_backward_block_kwargs(blocks), ACC_DTYPE=acc,
    )
    # The [P, N] partials summed over the chunks in a fixed order.
    if need_weight:
        sum_partials(part_dweight, dweight)
    if need_bias:
        sum_partials(part_dbias, dbias)
    return dx, dweight, dbias
