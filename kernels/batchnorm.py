"""Batch normalization kernels: training statistics, the normalize-and-affine map, and the backward.

Layout
------
BatchNorm reduces over every dim but the channel dim. The launchers view an input of shape
(N, C, *spatial) as three logical axes:

    O (outer reduction axis) x I (inner reduction axis) x C (channels)

each with its own stride, by merging adjacent reduction dims whose strides allow it (`merge_dims`
in kernels/_common.py). An NCHW tensor becomes O=N (stride C*H*W), I=H*W (stride 1); a
channels_last tensor, whose N and spatial dims merge into one, becomes O=1, I=N*H*W (stride C)
with channel stride 1. Every kernel works on 3-D tiles [BLOCK_O, BLOCK_I, BLOCK_C] addressed with
those strides, so both layouts are read in place, without copies and without per-element integer
division.

Training forward (three launches):
  1. `batch_norm_partial_stats_kernel`: many programs per channel, each reducing a chunk of the
     O x I plane to (count, mean, M2) with Chan's parallel update, numerically safe even when
     |mean| >> std, written to a workspace.
  2. `batch_norm_merge_stats_kernel`: one program per channel block merges the partials in a
     fixed order (deterministic), writes mean and 1/sqrt(var + eps), and updates running stats.
  3. `batch_norm_apply_kernel`: y = (x - mean) * invstd * weight + bias, optionally ReLU.

Backward (see docs/batchnorm.md for the derivation):
  1. `batch_norm_backward_partial_kernel`: partial sums of dy and dy * xhat per chunk.
  2. `sum_partials` (kernels/reduction.py): fixed-order sums of the partials; these are dbias and
     dweight.
  3. `batch_norm_backward_input_kernel`: dx from dy, xhat and the two sums.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels._common import (_block, _next_pow2, accumulator_dtype, accumulator_torch_dtype, cached_plan,
                                        cdiv, chan_merge, interpreted_run, launch, merge_dims, parallel_programs)
from tritonprop.kernels.activations import relu
from tritonprop.kernels.reduction import sum_partials

# Elements per tile: large enough to keep loads wide, small enough for registers (16 fp32
# values per thread at 8 warps).
TILE_ELEMENTS = 4096
# The same under Triton's interpreter, where fewer, larger programs are faster (`plan_tiles`).
INTERPRETED_TILE_ELEMENTS = 65536



# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _tile_indices(o_start, i_start, c_start, O, I, C, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr,
                  BLOCK_C: tl.constexpr):
    """Index vectors of one [BLOCK_O, BLOCK_I, BLOCK_C] tile and the mask of its in-bounds part."""
    o = o_start + tl.arange(0, BLOCK_O)
    i = i_start + tl.arange(0, BLOCK_I)
    c = c_start + tl.arange(0, BLOCK_C)
    mask = (o < O)[:, None, None] & (i < I)[None, :, None] & (c < C)[None, None, :]
    return o, i, c, mask


@triton.jit
def _tile_offsets(o, i, c, stride_o, stride_i, stride_c):
    # int64: a tensor may hold more than 2**31 elements even when each index fits in int32.
    return (o.to(tl.int64)[:, None, None] * stride_o
            + i.to(tl.int64)[None, :, None] * stride_i
            + c.to(tl.int64)[None, None, :] * stride_c)


@triton.jit
def _split_program_id(num_o_blocks, num_i_parts):
    """(channel block, outer block, inner part) of this program; consecutive programs share a
    channel block and walk along the inner axis, which is contiguous in memory for NCHW."""
    pid = tl.program_id(0)
    programs_per_c_block = num_o_blocks * num_i_parts
    return pid // programs_per_c_block, (pid % programs_per_c_block) // num_i_parts, pid % num_i_parts


@triton.jit
def _channel_params(mean_ptr, invstd_ptr, weight_ptr, bias_ptr, stride_weight, stride_bias, c, C,
                    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """Per-channel mean, invstd, weight and bias as [BLOCK_C] vectors; absent weight and bias act as 1 and 0.

    weight and bias are read by their strides: a strided view or an expanded (stride-0) parameter is
    read in place.
    """
    mean = tl.load(mean_ptr + c, mask=c < C, other=0.0)
    invstd = tl.load(invstd_ptr + c, mask=c < C, other=0.0)
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + c.to(tl.int64) * stride_weight, mask=c < C, other=1.0).to(ACC_DTYPE)
    else:
        w = tl.full(c.shape, 1.0, ACC_DTYPE)
    if HAS_BIAS:
        b = tl.load(bias_ptr + c.to(tl.int64) * stride_bias, mask=c < C, other=0.0).to(ACC_DTYPE)
    else:
        b = tl.zeros(c.shape, ACC_DTYPE)
    return mean, invstd, w, b


@triton.jit
def _partials_tile(p_start, c, P, C, BLOCK_P: tl.constexpr):
    """Offsets and mask of rows p_start .. p_start + BLOCK_P of a [P, C] partials workspace."""
    p = p_start + tl.arange(0, BLOCK_P)
    return p.to(tl.int64)[:, None] * C + c[None, :], (p < P)[:, None] & (c < C)[None, :]


@triton.jit
def _normalize(x, mean, invstd, w, b):
    """xhat and the pre-activation z = xhat * w + b of a tile (per-channel vectors broadcast).

    The forward and both backward kernels call this one helper, so the ReLU mask that the
    backward recomputes is bit-for-bit the one the forward applied.
    """
    xhat = (x - mean[None, None, :]) * invstd[None, None, :]
    z = xhat * w[None, None, :] + b[None, None, :]
    return xhat, z


# ----------------------------------------------------------------------------------------------
# Training forward
# ----------------------------------------------------------------------------------------------


@triton.jit
def batch_norm_partial_stats_kernel(
    x_ptr, part_mean_ptr, part_m2_ptr, part_count_ptr,
    O, I, C,
    stride_xo, stride_xi, stride_xc,
    num_o_blocks, num_i_chunks, tiles_per_chunk, num_i_tiles,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # One program per (channel block, outer block, chunk of inner tiles); the chunk's partial
    # statistics go to row `o_block * num_i_chunks + i_chunk` of the [P, C] workspace.
    c_block, o_block, i_chunk = _split_program_id(num_o_blocks, num_i_chunks)

    first_tile = i_chunk * tiles_per_chunk
    tiles_here = tl.minimum(tiles_per_chunk, num_i_tiles - first_tile)

    count = tl.zeros([BLOCK_C], ACC_DTYPE)
    mean = tl.zeros([BLOCK_C], ACC_DTYPE)
    m2 = tl.zeros([BLOCK_C], ACC_DTYPE)
    for t in range(0, tiles_here):
        o, i, c, mask = _tile_indices(o_block * BLOCK_O, (first_tile + t) * BLOCK_I, c_block * BLOCK_C,
                                      O, I, C, BLOCK_O, BLOCK_I, BLOCK_C)
        x = tl.load(x_ptr + _tile_offsets(o, i, c, stride_xo, stride_xi, stride_xc), mask=mask, other=0.0)
        x = x.to(ACC_DTYPE)
        # Every channel of the tile sees the same number of valid (o, i) positions.
        tile_count = tl.sum(tl.sum(mask.to(ACC_DTYPE), axis=1), axis=0)
        tile_mean = tl.sum(tl.sum(x, axis=1), axis=0) / tl.maximum(tile_count, 1.0)
        centered = tl.where(mask, x - tile_mean[None, None, :], 0.0)
        tile_m2 = tl.sum(tl.sum(centered * centered, axis=1), axis=0)
        count, mean, m2 = chan_merge(count, mean, m2, tile_count, tile_mean, tile_m2)

    c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    row = (o_block * num_i_chunks + i_chunk).to(tl.int64) * C
    tl.store(part_mean_ptr + row + c, mean, mask=c < C)
    tl.store(part_m2_ptr + row + c, m2, mask=c < C)
    tl.store(part_count_ptr + row + c, count, mask=c < C)


@triton.jit
def batch_norm_merge_stats_kernel(
    part_mean_ptr, part_m2_ptr, part_count_ptr,
    mean_ptr, invstd_ptr, running_mean_ptr, running_var_ptr,
    P, C, eps, momentum, stride_running_mean, stride_running_var,
    UPDATE_RUNNING: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # One program per channel block. Partials are visited in the same order on every call,
    # so the statistics (and everything downstream) are deterministic.
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C

    # Pass 1: the overall mean, as the count-weighted mean of the partial means.
    total = tl.zeros([BLOCK_C], ACC_DTYPE)
    count = tl.zeros([BLOCK_C], ACC_DTYPE)
    for p_start in range(0, P, BLOCK_P):
        offs, mask = _partials_tile(p_start, c, P, C, BLOCK_P)
        n = tl.load(part_count_ptr + offs, mask=mask, other=0.0)
        total += tl.sum(n * tl.load(part_mean_ptr + offs, mask=mask, other=0.0), axis=0)
        count += tl.sum(n, axis=0)
    # Masked-off channels have count 0; clamp so they stay finite (they are never stored).
    count = tl.maximum(count, 1.0)
    mean = total / count

    # Pass 2: M2 of the union = sum of the partial M2s + each partial's spread about the mean.
    m2 = tl.zeros([BLOCK_C], ACC_DTYPE)
    for p_start in range(0, P, BLOCK_P):
        offs, mask = _partials_tile(p_start, c, P, C, BLOCK_P)
        n = tl.load(part_count_ptr + offs, mask=mask, other=0.0)
        d = tl.load(part_mean_ptr + offs, mask=mask, other=0.0) - mean[None, :]
        m2 += tl.sum(tl.load(part_m2_ptr + offs, mask=mask, other=0.0) + n * d * d, axis=0)

    # Normalization uses the biased variance; the running estimate uses the unbiased one.
    var = m2 / count
    tl.store(mean_ptr + c, mean, mask=c_mask)
    tl.store(invstd_ptr + c, 1.0 / tl.sqrt(var + eps), mask=c_mask)
    if UPDATE_RUNNING:
        # Updated in place by their strides: a strided view of a buffer is written where it lies.
        running_mean_offsets = c.to(tl.int64) * stride_running_mean
        running_var_offsets = c.to(tl.int64) * stride_running_var
        running_mean = tl.load(running_mean_ptr + running_mean_offsets, mask=c_mask).to(ACC_DTYPE)
        running_var = tl.load(running_var_ptr + running_var_offsets, mask=c_mask).to(ACC_DTYPE)
        running_mean = (1.0 - momentum) * running_mean + momentum * mean
        running_var = (1.0 - momentum) * running_var + momentum * (m2 / tl.maximum(count - 1.0, 1.0))
        tl.store(running_mean_ptr + running_mean_offsets, running_mean.to(running_mean_ptr.dtype.element_ty),
                 mask=c_mask)
        tl.store(running_var_ptr + running_var_offsets, running_var.to(running_var_ptr.dtype.element_ty),
                 mask=c_mask)


@triton.jit
def batch_norm_eval_stats_kernel(running_mean_ptr, running_var_ptr, mean_ptr, invstd_ptr, C, eps,
                                 stride_running_mean, stride_running_var,
                                 BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr):
    # Eval mode normalizes with the running statistics; this puts them in the same
    # (mean, invstd) form that the training path produces, in the accumulator dtype.
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = c < C
    mean = tl.load(running_mean_ptr + c.to(tl.int64) * stride_running_mean, mask=mask).to(ACC_DTYPE)
    var = tl.load(running_var_ptr + c.to(tl.int64) * stride_running_var, mask=mask, other=1.0).to(ACC_DTYPE)
    tl.store(mean_ptr + c, mean, mask=mask)
    tl.store(invstd_ptr + c, 1.0 / tl.sqrt(var + eps), mask=mask)


@triton.jit
def batch_norm_apply_kernel(
    x_ptr, y_ptr, mean_ptr, invstd_ptr, weight_ptr, bias_ptr,
    O, I, C,
    stride_xo, stride_xi, stride_xc,
    stride_yo, stride_yi, stride_yc,
    stride_weight, stride_bias,
    num_o_blocks, num_i_tiles,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, FUSE_RELU: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # One program per tile.
    c_block, o_block, i_tile = _split_program_id(num_o_blocks, num_i_tiles)

    o, i, c, mask = _tile_indices(o_block * BLOCK_O, i_tile * BLOCK_I, c_block * BLOCK_C, O, I, C,
                                  BLOCK_O, BLOCK_I, BLOCK_C)
    mean, invstd, w, b = _channel_params(mean_ptr, invstd_ptr, weight_ptr, bias_ptr, stride_weight, stride_bias,
                                         c, C, HAS_WEIGHT, HAS_BIAS, ACC_DTYPE)

    x = tl.load(x_ptr + _tile_offsets(o, i, c, stride_xo, stride_xi, stride_xc), mask=mask, other=0.0)
    _, z = _normalize(x.to(ACC_DTYPE), mean, invstd, w, b)
    if FUSE_RELU:
        z = relu(z)
    tl.store(y_ptr + _tile_offsets(o, i, c, stride_yo, stride_yi, stride_yc),
             z.to(y_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------


@triton.jit
def batch_norm_backward_partial_kernel(
    x_ptr, dy_ptr, mean_ptr, invstd_ptr, weight_ptr, bias_ptr,
    part_sum_dy_ptr, part_sum_dy_xhat_ptr,
    O, I, C,
    stride_xo, stride_xi, stride_xc,
    stride_dyo, stride_dyi, stride_dyc,
    stride_weight, stride_bias,
    num_o_blocks, num_i_chunks, tiles_per_chunk, num_i_tiles,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, FUSE_RELU: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # Same work split as batch_norm_partial_stats_kernel.
    c_block, o_block, i_chunk = _split_program_id(num_o_blocks, num_i_chunks)

    c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    mean, invstd, w, b = _channel_params(mean_ptr, invstd_ptr, weight_ptr, bias_ptr, stride_weight, stride_bias,
                                         c, C, HAS_WEIGHT, HAS_BIAS, ACC_DTYPE)

    first_tile = i_chunk * tiles_per_chunk
    tiles_here = tl.minimum(tiles_per_chunk, num_i_tiles - first_tile)
    sum_dy = tl.zeros([BLOCK_C], ACC_DTYPE)
    sum_dy_xhat = tl.zeros([BLOCK_C], ACC_DTYPE)
    for t in range(0, tiles_here):
        o, i, c, mask = _tile_indices(o_block * BLOCK_O, (first_tile + t) * BLOCK_I, c_block * BLOCK_C,
                                      O, I, C, BLOCK_O, BLOCK_I, BLOCK_C)
        x = tl.load(x_ptr + _tile_offsets(o, i, c, stride_xo, stride_xi, stride_xc), mask=mask, other=0.0)
        dy = tl.load(dy_ptr + _tile_offsets(o, i, c, stride_dyo, stride_dyi, stride_dyc), mask=mask, other=0.0)
        xhat, z = _normalize(x.to(ACC_DTYPE), mean, invstd, w, b)
        dy = dy.to(ACC_DTYPE)
        if FUSE_RELU:
            dy = tl.where(z <= 0.0, 0.0, dy)
        # Out-of-bounds positions loaded dy = 0, so they add nothing to either sum.
        sum_dy += tl.sum(tl.sum(dy, axis=1), axis=0)
        sum_dy_xhat += tl.sum(tl.sum(dy * xhat, axis=1), axis=0)

    row = (o_block * num_i_chunks + i_chunk).to(tl.int64) * C
    tl.store(part_sum_dy_ptr + row + c, sum_dy, mask=c < C)
    tl.store(part_sum_dy_xhat_ptr + row + c, sum_dy_xhat, mask=c < C)


@triton.jit
def batch_norm_backward_input_kernel(
    x_ptr, dy_ptr, dx_ptr, mean_ptr, invstd_ptr, weight_ptr, bias_ptr, sum_dy_ptr, sum_dy_xhat_ptr,
    O, I, C, inv_count,
    stride_xo, stride_xi, stride_xc,
    stride_dyo, stride_dyi, stride_dyc,
    stride_dxo, stride_dxi, stride_dxc,
    stride_weight, stride_bias,
    num_o_blocks, num_i_tiles,
    TRAINING: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, FUSE_RELU: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    c_block, o_block, i_tile = _split_program_id(num_o_blocks, num_i_tiles)

    o, i, c, mask = _tile_indices(o_block * BLOCK_O, i_tile * BLOCK_I, c_block * BLOCK_C, O, I, C,
                                  BLOCK_O, BLOCK_I, BLOCK_C)
    mean, invstd, w, b = _channel_params(mean_ptr, invstd_ptr, weight_ptr, bias_ptr, stride_weight, stride_bias,
                                         c, C, HAS_WEIGHT, HAS_BIAS, ACC_DTYPE)

    x = tl.load(x_ptr + _tile_offsets(o, i, c, stride_xo, stride_xi, stride_xc), mask=mask, other=0.0)
    dy = tl.load(dy_ptr + _tile_offsets(o, i, c, stride_dyo, stride_dyi, stride_dyc), mask=mask, other=0.0)
    xhat, z = _normalize(x.to(ACC_DTYPE), mean, invstd, w, b)
    dy = dy.to(ACC_DTYPE)
    if FUSE_RELU:
        dy = tl.where(z <= 0.0, 0.0, dy)
    if TRAINING:
        # mean and var depend on every x of the channel, which adds two terms:
        # dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
        mean_dy = tl.load(sum_dy_ptr + c, mask=c < C, other=0.0) * inv_count
        mean_dy_xhat = tl.load(sum_dy_xhat_ptr + c, mask=c < C, other=0.0) * inv_count
        dy = dy - mean_dy[None, None, :] - xhat * mean_dy_xhat[None, None, :]
    dx = dy * (w * invstd)[None, None, :]
    tl.store(dx_ptr + _tile_offsets(o, i, c, stride_dxo, stride_dxi, stride_dxc),
             dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch planning
# ----------------------------------------------------------------------------------------------


@cached_plan  # the forward and backward ask twice per launch: `collapsible`, then `Layout`
def reduction_axes(shape, *strides):
    """Merge the reduction dims (all but dim 1) of same-shaped tensors into at most two axes.

    Returns ``(sizes, strides_per_tensor)`` with ``sizes = (O, I)`` and, for each tensor,
    ``(stride_o, stride_i, stride_c)``; or ``None`` when more than two axes remain (a view that
    must be copied first). Dims are merged only where the merge is valid for every tensor.
    """
    axes = merge_dims(shape, [0, *range(2, len(shape))], strides)
    if len(axes) > 2:
        return None
    while len(axes) < 2:
        axes.insert(0, [1, [0] * len(strides)])
    sizes = (axes[0][0], axes[1][0])
    per_tensor = tuple((axes[0][1][k], axes[1][1][k], t[1]) for k, t in enumerate(strides))
    return sizes, per_tensor


def plan_tiles(O: int, I: int, C: int, stride_i: int, stride_c: int):
    """Pick (BLOCK_O, BLOCK_I, BLOCK_C) so that the fastest-varying memory axis is the wide one."""
    if interpreted_run():
        # Each program costs Python time, whatever its tile: as many channels per tile as fit in
        # a large one (numpy gathers the strided channels as fast).
        block_i = min(_next_pow2(I), INTERPRETED_TILE_ELEMENTS)
        block_c = min(_next_pow2(C), max(1, INTERPRETED_TILE_ELEMENTS // block_i))
    elif C > 1 and abs(stride_c) < abs(stride_i):
        # channels_last-like: channels are adjacent in memory, so a tile spans many channels.
        block_c = min(_next_pow2(C), 64)
        block_i = min(_next_pow2(I), TILE_ELEMENTS // block_c)
    else:
        # NCHW-like: one channel per tile, spanning the contiguous spatial axis.
        block_c = 1
        block_i = min(_next_pow2(I), TILE_ELEMENTS)
    block_o = min(_next_pow2(O), max(1, TILE_ELEMENTS // (block_c * block_i)))
    return block_o, block_i, block_c


def _grid_counts(O, I, C, tiles):
    block_o, block_i, block_c = tiles
    return cdiv(C, block_c), cdiv(O, block_o), cdiv(I, block_i)


def _chunking(num_c_blocks, num_o_blocks, num_i_tiles, device, chunks=None):
    """Split each row of inner tiles into chunks so the split reduction fills the device."""
    if chunks is None:
        wanted = parallel_programs(device)
        chunks = cdiv(wanted, num_c_blocks * num_o_blocks)
    chunks = max(1, min(int(chunks), num_i_tiles))
    tiles_per_chunk = cdiv(num_i_tiles, chunks)
    return cdiv(num_i_tiles, tiles_per_chunk), tiles_per_chunk


def _channel_blocks(C):
    """Block size and grid of the per-channel kernels (the statistics merge and eval statistics)."""
    block_c = min(_next_pow2(C), 128)
    return block_c, (cdiv(C, block_c),)


class Layout:
    """How a group of same-shaped tensors maps onto the (O, I, C) axes of the kernels."""

    def __init__(self, shape, tensors, tiles=None, chunks=None):
        found = reduction_axes(shape, *[t.stride() for t in tensors])
        if found is None:
            raise ValueError("tensors need more than two reduction axes; copy them first")
        (self.O, self.I), self.strides = found
        self.C = shape[1]
        self.count = self.O * self.I
        self.tiles = tiles or plan_tiles(self.O, self.I, self.C, self.strides[0][1], self.strides[0][2])
        self.num_c_blocks, self.num_o_blocks, self.num_i_tiles = _grid_counts(self.O, self.I, self.C, self.tiles)
        self.chunks = chunks

    def split(self, device):
        num_i_chunks, tiles_per_chunk = _chunking(self.num_c_blocks, self.num_o_blocks, self.num_i_tiles,
                                                  device, self.chunks)
        return num_i_chunks, tiles_per_chunk

    @property
    def tile_grid(self):
        return (self.num_c_blocks * self.num_o_blocks * self.num_i_tiles,)


def collapsible(shape, *tensors) -> bool:
    return reduction_axes(shape, *[t.stride() for t in tensors]) is not None


def _suggest_memory_format(x):
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _strides(*vectors):
    """The element stride of each per-channel vector (weight, bias, running stats); 0 for an absent one."""
    return tuple(v.stride(0) if v is not None else 0 for v in vectors)


def _block_kwargs(layout):
    block_o, block_i, block_c = layout.tiles
    # Not autotuned: each tile shape would multiply compile time on a fresh GPU machine, and
    # for a streaming kernel the warp count matters little once loads are wide.
    num_warps = 8 if block_o * block_i * block_c >= 2048 else 4
    return dict(BLOCK_O=block_o, BLOCK_I=block_i, BLOCK_C=block_c, num_warps=num_warps)


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def forward(x, weight, bias, running_mean, running_var, training, momentum, eps, fuse_relu=False,
            tiles=None, chunks=None):
    """Batch norm forward. Returns ``(y, mean, invstd)``; the last two are per-channel, fp32 (fp64 for fp64 x).

    In training mode the batch statistics are used and, when running stats are given, updated in
    place; in eval mode the running stats are used. ``x`` must have at most two reduction axes
    after merging (see ``collapsible``); ``tiles`` and ``chunks`` override the launch plan (tests
    use them to force many partials).
    """
    C = x.shape[1]
    acc = accumulator_dtype(x.dtype)
    acc_torch = accumulator_torch_dtype(x.dtype)
    y = torch.empty_like(x)
    mean = torch.empty(C, device=x.device, dtype=acc_torch)
    invstd = torch.empty(C, device=x.device, dtype=acc_torch)
    if x.numel() == 0:
        return y, mean.zero_(), invstd.zero_()
    if not collapsible(x.shape, x, y):
        # A view whose reduction dims need three or more strides (a strided slice of W, say)
        # is copied once; dense NCHW and channels_last inputs never take this path.
        x = x.contiguous()
        y = torch.empty_like(x)
    layout = Layout(x.shape, [x, y], tiles, chunks)
    (sxo, sxi, sxc), (syo, syi, syc) = layout.strides

    if training:
        num_i_chunks, tiles_per_chunk = layout.split(x.device)
        P = layout.num_o_blocks * num_i_chunks
        part_mean = torch.empty((P, C), device=x.device, dtype=acc_torch)
        part_m2 = torch.empty_like(part_mean)
        part_count = torch.empty_like(part_mean)
        launch(batch_norm_partial_stats_kernel, (layout.num_c_blocks * P,))(
            x, part_mean, part_m2, part_count,
            layout.O, layout.I, C, sxo, sxi, sxc,
            layout.num_o_blocks, num_i_chunks, tiles_per_chunk, layout.num_i_tiles,
            **_block_kwargs(layout), ACC_DTYPE=acc,
        )
        update = running_mean is not None
        block_c, grid = _channel_blocks(C)
        launch(batch_norm_merge_stats_kernel, grid)(
            part_mean, part_m2, part_count, mean, invstd,
            running_mean if update else mean, running_var if update else invstd,
            P, C, eps, momentum, *_strides(running_mean, running_var),
            UPDATE_RUNNING=update, BLOCK_P=_block(P, 1, TILE_ELEMENTS // block_c), BLOCK_C=block_c, ACC_DTYPE=acc,
        )
    else:
        block_c, grid = _channel_blocks(C)
        launch(batch_norm_eval_stats_kernel, grid)(
            running_mean, running_var, mean, invstd, C, eps, *_strides(running_mean, running_var),
            BLOCK_C=block_c, ACC_DTYPE=acc,
        )

    launch(batch_norm_apply_kernel, layout.tile_grid)(
        x, y, mean, invstd,
        weight if weight is not None else mean, bias if bias is not None else mean,
        layout.O, layout.I, C, sxo, sxi, sxc, syo, syi, syc, *_strides(weight, bias),
        layout.num_o_blocks, layout.num_i_tiles,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, FUSE_RELU=fuse_relu,
        **_block_kwargs(layout), ACC_DTYPE=acc,
    )
    return y, mean, invstd


def backward(dy, x, weight, bias, mean, invstd, training, fuse_relu=False,
             need_input=True, need_weight=True, need_bias=True, tiles=None, chunks=None):
    """Gradients of batch norm. Returns ``(dx, dweight, dbias)``, with None for those not needed.

    ``mean`` and ``invstd`` are the ones ``forward`` returned. In training mode dx includes the
    paths through the batch mean and variance; in eval mode the statistics are constants.
    ``dy`` and ``x`` must share a layout that ``collapsible`` accepts.
    """
    C = x.shape[1]
    acc = accumulator_dtype(x.dtype)
    acc_torch = accumulator_torch_dtype(x.dtype)
    need_weight = need_weight and weight is not None
    need_bias = need_bias and bias is not None
    dx = torch.empty_like(x) if need_input else None
    dweight = torch.empty_like(weight) if need_weight else None
    dbias = torch.empty_like(bias) if need_bias else None
    if x.numel() == 0:
        return dx, dweight.zero_() if need_weight else None, dbias.zero_() if need_bias else None
    if not collapsible(x.shape, x, dy, *([dx] if need_input else [])):
        # dy can arrive in any layout (autograd may hand us an expanded or transposed one);
        # when it does not line up with x, both are copied to x's memory format.
        x = x.contiguous(memory_format=_suggest_memory_format(x))
        dy = dy.contiguous(memory_format=_suggest_memory_format(x))
        dx = torch.empty_like(x) if need_input else None

    tensors = [x, dy] + ([dx] if need_input else [])
    layout = Layout(x.shape, tensors, tiles, chunks)
    (sxo, sxi, sxc), (sdyo, sdyi, sdyc) = layout.strides[:2]
    flags = dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, FUSE_RELU=fuse_relu)
    weight_arg = weight if weight is not None else mean
    bias_arg = bias if bias is not None else mean

    # The channel sums are needed for dweight/dbias, and for dx in training mode.
    sum_dy = sum_dy_xhat = mean
    if need_weight or need_bias or (training and need_input):
        num_i_chunks, tiles_per_chunk = layout.split(x.device)
        P = layout.num_o_blocks * num_i_chunks
        part_sum_dy = torch.empty((P, C), device=x.device, dtype=acc_torch)
        part_sum_dy_xhat = torch.empty_like(part_sum_dy)
        launch(batch_norm_backward_partial_kernel, (layout.num_c_blocks * P,))(
            x, dy, mean, invstd, weight_arg, bias_arg, part_sum_dy, part_sum_dy_xhat,
            layout.O, layout.I, C, sxo, sxi, sxc, sdyo, sdyi, sdyc, *_strides(weight, bias),
            layout.num_o_blocks, num_i_chunks, tiles_per_chunk, layout.num_i_tiles,
            **flags, **_block_kwargs(layout), ACC_DTYPE=acc,
        )
        # Fixed-order sums of the partials: sum(dy) is dbias and sum(dy * xhat) is dweight; dx
        # reads them in the accumulator dtype, and the gradients get their parameter's dtype.
        sum_dy = torch.empty(C, device=x.device, dtype=acc_torch)
        sum_dy_xhat = torch.empty_like(sum_dy)
        sum_partials(part_sum_dy, sum_dy, copy=dbias)
        sum_partials(part_sum_dy_xhat, sum_dy_xhat, copy=dweight)

    if need_input:
        sdxo, sdxi, sdxc = layout.strides[2]
        launch(batch_norm_backward_input_kernel, layout.tile_grid)(
            x, dy, dx, mean, invstd, weight_arg, bias_arg, sum_dy, sum_dy_xhat,
            layout.O, layout.I, C, 1.0 / layout.count,
            sxo, sxi, sxc, sdyo, sdyi, sdyc, sdxo, sdxi, sdxc, *_strides(weight, bias),
            layout.num_o_blocks, layout.num_i_tiles,
            TRAINING=training, **flags, **_block_kwargs(layout), ACC_DTYPE=acc,
        )
    return dx, dweight, dbias
