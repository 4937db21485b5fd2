"""2-D convolution kernels: implicit-GEMM forward, input gradient (dgrad), weight gradient (wgrad).

Notation: input x (N, C, H, W), weight w (K, C/groups, R, S), output y (N, K, Ho, Wo); within a
group g the kernels see Cg = C/groups input channels and Kg = K/groups output channels.

    y[n, k, oh, ow] = b[k] + sum_{c, r, s} w[k, c, r, s] * x[n, g*Cg + c, oh*sh - ph + r*δh, ow*sw - pw + s*δw]

Every kernel is a GEMM whose operand tiles are gathered from the tensors as they lie in memory,
by their strides, so NCHW and channels_last run without copies and im2col is never built:

  forward   rows (n, oh, ow)   x  cols k   over (r, s, c)          conv2d_forward_kernel
            (a channels_last input of at most 4 channels, a stem, is copied once with its
             channels padded to 4, and reduced a row of taps per step: conv2d_forward_taps_kernel)
  dgrad     rows (n, ih, iw)   x  cols c   over (r, s, k)          conv2d_backward_input_kernel
  wgrad     rows k             x  cols (c, r, s)  over (n, oh, ow) conv2d_backward_weight_kernel
            (split-K: partials to a workspace, summed in a fixed order by
             kernels/reduction.py, so the result is deterministic; with channels_last
             input the columns run (r, s, c), channels innermost, as x lies in memory)

The forward fuses bias and ReLU or GELU (constexpr flags, the shared codes and helpers of
kernels/activations.py); `activation_backward` turns the upstream gradient into the gradient of
the pre-activation, with the shared elementwise kernel (kernels/elementwise.py).
docs/conv2d.md derives each kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels import elementwise
from tritonprop.kernels._common import (_allow_tf32, _block, accumulator_dtype, accumulator_torch_dtype, cdiv,
                                        dot_accumulate, dot_options, interpreted_run, launch, launch_tuned,
                                        parallel_programs)
from tritonprop.kernels.activations import ACTIVATIONS, SAVES_PREACTIVATION, apply_activation
from tritonprop.kernels.reduction import sum_partials

# float32 dots follow cuDNN's TF32 flag, as torch's own convolution does.
TF32_FLAG = "cudnn"


@triton.jit
def _split_rows(m, P, Q):
    """Row index m of an (n, p, q) grid with P x Q positions per image -> (n, p, q)."""
    n = m // (P * Q)
    rest = m % (P * Q)
    return n, rest // Q, rest % Q


# ----------------------------------------------------------------------------------------------
# Forward: implicit GEMM with a fused bias + activation epilogue
# ----------------------------------------------------------------------------------------------


@triton.jit
def conv2d_forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    M, H, W, Ho, Wo, R, S, Cg, Kg,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_yn, stride_yk, stride_yh, stride_yw, stride_b,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, STORE_PREACTIVATION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)

    # Rows are output positions (n, oh, ow); columns are output channels of this group.
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n, oh, ow = _split_rows(m, Ho, Wo)
    k_in_group = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k = group * Kg + k_in_group
    row_ok = m < M
    col_ok = k_in_group < Kg
    x_image = n.to(tl.int64) * stride_xn
    c_offsets = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    # The reduction runs over (r, s, c): for a fixed tap (r, s) each row reads one input pixel,
    # so its address is computed once and the channel chunks only add c * stride_xc.
    for r in range(0, R):
        ih = oh * conv_stride_h - pad_h + r * dil_h
        for s in range(0, S):
            iw = ow * conv_stride_w - pad_w + s * dil_w
            # Taps that fall into the zero padding are masked, never loaded.
            pixel_ok = row_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_pixel = x_image + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw
            w_tap = r * stride_wr + s * stride_ws
            for c_start in range(0, Cg, BLOCK_K):
                c = c_start + c_offsets
                c_ok = c < Cg
                a = tl.load(x_ptr + x_pixel[:, None] + (group * Cg + c).to(tl.int64)[None, :] * stride_xc,
                            mask=pixel_ok[:, None] & c_ok[None, :], other=0.0)
                b = tl.load(w_ptr + k.to(tl.int64)[None, :] * stride_wk + c[:, None] * stride_wc + w_tap,
                            mask=c_ok[:, None] & col_ok[None, :], other=0.0)
                acc = dot_accumulate(a, b, acc, INPUT_PRECISION, UPCAST_OPERANDS)

    _bias_activation_store(acc, b_ptr, y_ptr, z_ptr, n, oh, ow, k, row_ok, col_ok,
                           stride_yn, stride_yk, stride_yh, stride_yw, stride_b,
                           HAS_BIAS, ACTIVATION, STORE_PREACTIVATION, ACC_DTYPE)


@triton.jit
def conv2d_forward_taps_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    M, H, W, Ho, Wo, R, S, K,
    stride_xn, stride_xh,
    stride_wk, stride_wr,
    stride_yn, stride_yk, stride_yh, stride_yw, stride_b,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, STORE_PREACTIVATION: tl.constexpr,
    CHANNELS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    # The forward for inputs with few channels (a network's stem, C = 3), one group, dilation 1
    # along W. x is channels_last with CHANNELS channels (the launch pads C up to it, with zeros)
    # and w is laid out (K, R, S, CHANNELS). The reduction then runs over a whole row of taps at
    # once: for tap row r, index j = s * CHANNELS + c is input pixel (ih, iw0 + s), channel c,
    # and all those elements lie one after another in memory, so a row of A is one contiguous
    # run, 8-byte aligned: pipelined vector copies, where a 3-channel pixel is 6 bytes that
    # nothing can copy asynchronously. The weight tile is w[k, r, j], contiguous in j as well.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n, oh, ow = _split_rows(m, Ho, Wo)
    k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = m < M
    col_ok = k < K
    j = tl.arange(0, BLOCK_K)
    iw = (ow * conv_stride_w - pad_w)[:, None] + (j // CHANNELS)[None, :]
    tap_ok = (j < S * CHANNELS)[None, :] & (iw >= 0) & (iw < W)
    # The first pixel of each row's run, in elements: (iw0 * CHANNELS) keeps its alignment known.
    run_start = n.to(tl.int64) * stride_xn + ((ow * conv_stride_w - pad_w) * CHANNELS).to(tl.int64)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for r in range(0, R):
        ih = oh * conv_stride_h - pad_h + r * dil_h
        a_ok = (row_ok & (ih >= 0) & (ih < H))[:, None] & tap_ok
        a = tl.load(x_ptr + (run_start + ih.to(tl.int64) * stride_xh)[:, None] + j[None, :], mask=a_ok, other=0.0)
        b = tl.load(w_ptr + k.to(tl.int64)[None, :] * stride_wk + r * stride_wr + j[:, None],
                    mask=(j < S * CHANNELS)[:, None] & col_ok[None, :], other=0.0)
        acc = dot_accumulate(a, b, acc, INPUT_PRECISION, UPCAST_OPERANDS)

    _bias_activation_store(acc, b_ptr, y_ptr, z_ptr, n, oh, ow, k, row_ok, col_ok,
                           stride_yn, stride_yk, stride_yh, stride_yw, stride_b,
                           HAS_BIAS, ACTIVATION, STORE_PREACTIVATION, ACC_DTYPE)


@triton.jit
def _bias_activation_store(acc, b_ptr, y_ptr, z_ptr, n, oh, ow, k, row_ok, col_ok,
                           stride_yn, stride_yk, stride_yh, stride_yw, stride_b,
                           HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, STORE_PREACTIVATION: tl.constexpr,
                           ACC_DTYPE: tl.constexpr):
    """The epilogue of both forward kernels: z = acc + bias, y = act(z), stored at rows (n, oh, ow), columns k."""
    if HAS_BIAS:
        # By its stride: a bias may be a strided view or an expanded (stride-0) tensor.
        acc += tl.load(b_ptr + k.to(tl.int64) * stride_b, mask=col_ok, other=0.0).to(ACC_DTYPE)[None, :]
    out = apply_activation(acc, ACTIVATION)

    y_offsets = (n.to(tl.int64) * stride_yn + oh.to(tl.int64) * stride_yh + ow.to(tl.int64) * stride_yw)[:, None] \
        + k.to(tl.int64)[None, :] * stride_yk
    mask = row_ok[:, None] & col_ok[None, :]
    tl.store(y_ptr + y_offsets, out.to(y_ptr.dtype.element_ty), mask=mask)
    if STORE_PREACTIVATION:
        # GELU's backward needs z itself; z is laid out exactly like y.
        tl.store(z_ptr + y_offsets, acc.to(z_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Depthwise (groups == C, one input channel per group): direct convolution without tl.dot.
# The GEMM kernels would fill a 16-wide dot tile with one useful channel on each side, so these
# kernels multiply elementwise and reduce over the taps instead, with channels as the wide axis.
# Output channel k reads input channel k // Kg (Kg is the channel multiplier).
# ----------------------------------------------------------------------------------------------


@triton.jit
def conv2d_depthwise_forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    M, H, W, Ho, Wo, R, S, K, Kg,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wr, stride_ws,
    stride_yn, stride_yk, stride_yh, stride_yw, stride_b,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, STORE_PREACTIVATION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n, oh, ow = _split_rows(m, Ho, Wo)
    k = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = m < M
    col_ok = k < K
    x_channel = (k // Kg).to(tl.int64) * stride_xc

    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC_DTYPE)
    for r in range(0, R):
        ih = oh * conv_stride_h - pad_h + r * dil_h
        for s in range(0, S):
            iw = ow * conv_stride_w - pad_w + s * dil_w
            pixel_ok = row_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_pixel = n.to(tl.int64) * stride_xn + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw
            x = tl.load(x_ptr + x_pixel[:, None] + x_channel[None, :], mask=pixel_ok[:, None] & col_ok[None, :],
                        other=0.0)
            w = tl.load(w_ptr + k * stride_wk + r * stride_wr + s * stride_ws, mask=col_ok, other=0.0)
            acc += x.to(ACC_DTYPE) * w.to(ACC_DTYPE)[None, :]

    _bias_activation_store(acc, b_ptr, y_ptr, z_ptr, n, oh, ow, k, row_ok, col_ok,
                           stride_yn, stride_yk, stride_yh, stride_yw, stride_b,
                           HAS_BIAS, ACTIVATION, STORE_PREACTIVATION, ACC_DTYPE)


@triton.jit
def conv2d_depthwise_backward_input_kernel(
    dz_ptr, w_ptr, dx_ptr,
    M, H, W, Ho, Wo, R, S, C, Kg,
    stride_dzn, stride_dzk, stride_dzh, stride_dzw,
    stride_wk, stride_wr, stride_ws,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # dx[n, c, ih, iw] = sum over the Kg output channels of c and the taps that read (ih, iw);
    # the stride test is the one of conv2d_backward_input_kernel.
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n, ih, iw = _split_rows(m, H, W)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = m < M
    col_ok = c < C

    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC_DTYPE)
    for r in range(0, R):
        th = ih + pad_h - r * dil_h
        oh = th // conv_stride_h
        h_ok = (th >= 0) & (th % conv_stride_h == 0) & (oh < Ho)
        for s in range(0, S):
            tw = iw + pad_w - s * dil_w
            ow = tw // conv_stride_w
            pixel_ok = row_ok & h_ok & (tw >= 0) & (tw % conv_stride_w == 0) & (ow < Wo)
            dz_pixel = n.to(tl.int64) * stride_dzn + oh.to(tl.int64) * stride_dzh + ow.to(tl.int64) * stride_dzw
            for j in range(0, Kg):
                k = c * Kg + j
                dz = tl.load(dz_ptr + dz_pixel[:, None] + k.to(tl.int64)[None, :] * stride_dzk,
                             mask=pixel_ok[:, None] & col_ok[None, :], other=0.0)
                w = tl.load(w_ptr + k * stride_wk + r * stride_wr + s * stride_ws, mask=col_ok, other=0.0)
                acc += dz.to(ACC_DTYPE) * w.to(ACC_DTYPE)[None, :]

    dx_offsets = (n.to(tl.int64) * stride_dxn + ih.to(tl.int64) * stride_dxh + iw.to(tl.int64) * stride_dxw)[:, None] \
        + c.to(tl.int64)[None, :] * stride_dxc
    tl.store(dx_ptr + dx_offsets, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def conv2d_depthwise_backward_weight_kernel(
    dz_ptr, x_ptr, part_dw_ptr, part_db_ptr,
    M, H, W, Ho, Wo, S, K, Kg, RS, rows_per_split,
    stride_dzn, stride_dzk, stride_dzh, stride_dzw,
    stride_xn, stride_xc, stride_xh, stride_xw,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    COMPUTE_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # One program per (channel block, tap (r, s), slice of output positions): the partial of
    # dw[k, 0, r, s] = sum over its positions of dz[n, k, oh, ow] * x[n, k // Kg, ih, iw].
    k = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    tap = tl.program_id(1)
    split = tl.program_id(2)
    r = tap // S
    s = tap % S
    k_ok = k < K
    x_channel = (k // Kg).to(tl.int64) * stride_xc

    acc = tl.zeros([BLOCK_C], dtype=ACC_DTYPE)
    bias_acc = tl.zeros([BLOCK_C], dtype=ACC_DTYPE)
    first_row = split * rows_per_split
    for m_start in range(first_row, tl.minimum(first_row + rows_per_split, M), BLOCK_M):
        m = m_start + tl.arange(0, BLOCK_M)
        m_ok = (m < M) & (m < first_row + rows_per_split)
        n, oh, ow = _split_rows(m, Ho, Wo)
        dz = tl.load(dz_ptr + (n.to(tl.int64) * stride_dzn + oh.to(tl.int64) * stride_dzh
                               + ow.to(tl.int64) * stride_dzw)[:, None] + k.to(tl.int64)[None, :] * stride_dzk,
                     mask=m_ok[:, None] & k_ok[None, :], other=0.0).to(ACC_DTYPE)
        ih = oh * conv_stride_h - pad_h + r * dil_h
        iw = ow * conv_stride_w - pad_w + s * dil_w
        pixel_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x = tl.load(x_ptr + (n.to(tl.int64) * stride_xn + ih.to(tl.int64) * stride_xh
                             + iw.to(tl.int64) * stride_xw)[:, None] + x_channel[None, :],
                    mask=pixel_ok[:, None] & k_ok[None, :], other=0.0).to(ACC_DTYPE)
        acc += tl.sum(dz * x, axis=0)
        if COMPUTE_BIAS:
            bias_acc += tl.sum(dz, axis=0)

    # Workspace layout [split, k, (r, s)]: row `split` holds dw in its logical order, which is
    # what `sum_partials` sums.
    part_row = (split * K + k).to(tl.int64)
    tl.store(part_dw_ptr + part_row * RS + tap, acc, mask=k_ok)
    if COMPUTE_BIAS:
        if tap == 0:
            tl.store(part_db_ptr + part_row, bias_acc, mask=k_ok)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------


@triton.jit
def conv2d_backward_input_kernel(
    dz_ptr, w_ptr, dx_ptr,
    M, H, W, Ho, Wo, R, S, Cg, Kg,
    stride_dzn, stride_dzk, stride_dzh, stride_dzw,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)

    # Rows are input positions (n, ih, iw); columns are input channels of this group.
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n, ih, iw = _split_rows(m, H, W)
    c_in_group = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = m < M
    col_ok = c_in_group < Cg
    dz_image = n.to(tl.int64) * stride_dzn
    k_offsets = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for r in range(0, R):
        # Input row ih was read by tap r of output row oh iff ih = oh*sh - ph + r*δh, i.e. iff
        # (ih + ph - r*δh) is a non-negative multiple of the stride. With stride > 1 the other
        # rows simply get no contribution from this tap: they are masked, and no zeros are
        # ever inserted into dz.
        th = ih + pad_h - r * dil_h
        oh = th // conv_stride_h
        h_ok = (th >= 0) & (th % conv_stride_h == 0) & (oh < Ho)
        for s in range(0, S):
            tw = iw + pad_w - s * dil_w
            ow = tw // conv_stride_w
            pixel_ok = row_ok & h_ok & (tw >= 0) & (tw % conv_stride_w == 0) & (ow < Wo)
            dz_pixel = dz_image + oh.to(tl.int64) * stride_dzh + ow.to(tl.int64) * stride_dzw
            w_tap = r * stride_wr + s * stride_ws
            for k_start in range(0, Kg, BLOCK_K):
                k_in_group = k_start + k_offsets
                k_ok = k_in_group < Kg
                k = group * Kg + k_in_group
                a = tl.load(dz_ptr + dz_pixel[:, None] + k.to(tl.int64)[None, :] * stride_dzk,
                            mask=pixel_ok[:, None] & k_ok[None, :], other=0.0)
                # w[k, c, r, s] as a [k, c] tile: dgrad multiplies by the kernel transposed.
                b = tl.load(w_ptr + k.to(tl.int64)[:, None] * stride_wk + c_in_group[None, :] * stride_wc + w_tap,
                            mask=k_ok[:, None] & col_ok[None, :], other=0.0)
                acc = dot_accumulate(a, b, acc, INPUT_PRECISION, UPCAST_OPERANDS)

    c = group * Cg + c_in_group
    dx_offsets = (n.to(tl.int64) * stride_dxn + ih.to(tl.int64) * stride_dxh + iw.to(tl.int64) * stride_dxw)[:, None] \
        + c.to(tl.int64)[None, :] * stride_dxc
    tl.store(dx_ptr + dx_offsets, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def conv2d_backward_weight_kernel(
    dz_ptr, x_ptr, part_dw_ptr, part_db_ptr,
    M, H, W, Ho, Wo, R, S, Cg, Kg, K, CRS, rows_per_split,
    stride_dzn, stride_dzk, stride_dzh, stride_dzw,
    stride_xn, stride_xc, stride_xh, stride_xw,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    COMPUTE_BIAS: tl.constexpr, CHANNELS_INNER: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    pid_k = tl.program_id(0)
    pid_crs = tl.program_id(1)
    # Axis 2 enumerates (group, split) pairs; each split owns a contiguous slice of the
    # reduction over output positions.
    num_splits = tl.cdiv(M, rows_per_split)
    group = tl.program_id(2) // num_splits
    split = tl.program_id(2) % num_splits

    # Rows: output channels of this group. Columns: the (c, r, s) taps flattened, c outermost as
    # w is laid out, or with CHANNELS_INNER as (r, s, c): then a run of columns is a run of
    # channels of one input pixel, contiguous in a channels_last x, and its gather becomes
    # pipelined vector copies (one element per address otherwise, which Triton cannot pipeline).
    k_in_group = pid_k * BLOCK_M + tl.arange(0, BLOCK_M)
    k = group * Kg + k_in_group
    crs = pid_crs * BLOCK_N + tl.arange(0, BLOCK_N)
    if CHANNELS_INNER:
        c = crs % Cg
        r = crs // (S * Cg)
        s = (crs // Cg) % S
    else:
        c = crs // (R * S)
        r = (crs // S) % R
        s = crs % S
    k_ok = k_in_group < Kg
    crs_ok = crs < CRS
    x_channel = (group * Cg + c).to(tl.int64) * stride_xc

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    bias_acc = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    first_row = split * rows_per_split
    for m_start in range(first_row, tl.minimum(first_row + rows_per_split, M), BLOCK_K):
        m = m_start + tl.arange(0, BLOCK_K)
        m_ok = (m < M) & (m < first_row + rows_per_split)
        n, oh, ow = _split_rows(m, Ho, Wo)
        a = tl.load(dz_ptr + k.to(tl.int64)[:, None] * stride_dzk
                    + (n.to(tl.int64) * stride_dzn + oh.to(tl.int64) * stride_dzh + ow.to(tl.int64) * stride_dzw)[None, :],
                    mask=k_ok[:, None] & m_ok[None, :], other=0.0)
        # The input pixel that tap (r, s) of output (oh, ow) read: one per (row m, column crs).
        ih = oh[:, None] * conv_stride_h - pad_h + r[None, :] * dil_h
        iw = ow[:, None] * conv_stride_w - pad_w + s[None, :] * dil_w
        pixel_ok = m_ok[:, None] & crs_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        b = tl.load(x_ptr + n.to(tl.int64)[:, None] * stride_xn + x_channel[None, :]
                    + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw,
                    mask=pixel_ok, other=0.0)
        acc = dot_accumulate(a, b, acc, INPUT_PRECISION, UPCAST_OPERANDS)
        if COMPUTE_BIAS:
            bias_acc += tl.sum(a.to(ACC_DTYPE), axis=1)

    # Workspace rows are (split, k); the reduce kernel sums over split in order.
    part_row = (split * K + k).to(tl.int64)
    tl.store(part_dw_ptr + part_row[:, None] * CRS + crs[None, :], acc, mask=k_ok[:, None] & crs_ok[None, :])
    if COMPUTE_BIAS:
        if pid_crs == 0:
            tl.store(part_db_ptr + part_row, bias_acc, mask=k_ok)


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def channels_contiguous(t: torch.Tensor) -> bool:
    """Consecutive channels of a pixel lie next to each other (channels_last), or there is one."""
    return t.shape[1] == 1 or t.stride(1) == 1


# Under the interpreter: the widest weight-gradient tile side (64 compiled), and the most output
# positions per implicit-GEMM tile (64 or 128 compiled).
INTERPRETED_MAX_WGRAD_TILE = 256
INTERPRETED_MAX_GEMM_ROWS = 256


def depthwise_tiles(channels: int) -> tuple[int, int]:
    """(output positions, channels) per tile of the depthwise kernels: 64 x up to 32 compiled, and
    under the interpreter, where each program costs Python time, 256 x up to 128."""
    if interpreted_run():
        return 256, _block(channels, 1, 128)
    return 64, _block(channels, 1, 32)


def gemm_configs(operand: torch.Tensor, rows: int, cols: int, inner: int) -> list:
    """Tile configs of the implicit GEMMs (forward, stem and dgrad): rows are output positions,
    cols output channels, and the reduction runs over `inner` channels of `operand` per tap. The
    first is the launch's own choice; on the GPU the autotuner also times the others (one more
    stage, the other row-tile height); the interpreter runs the first alone.

    Chosen by the static sm_90 report (bench/results/static-sm90.md), where each compiles without
    spills at the benchmark shapes:
    - channels not contiguous (NCHW): the operand tile is gathered one element per address, and
      64 channels x 64 positions at 4 warps needed 255 registers and spilled 0.2-1.8 KB per
      thread in fp32. 16 channels per step at 8 warps: 110-128 registers, no spills, 2 CTAs/SM.
    - channels contiguous, 16-bit: 128 positions at 8 warps (two warpgroups), 80-173 registers,
      no spills, where 64 positions at 4 warps left half of each wgmma's M unused.
    """
    block_n = _block(cols, 16, 128)
    if interpreted_run():
        # Registers do not bind here; each program and each step of its loop costs Python time.
        return [dict(BLOCK_M=_block(rows, 16, INTERPRETED_MAX_GEMM_ROWS), BLOCK_N=block_n,
                     BLOCK_K=_block(inner, 16, 64), num_warps=4, num_stages=1)]
    if not channels_contiguous(operand):
        tiles = dict(BLOCK_M=64, BLOCK_N=block_n, BLOCK_K=_block(inner, 16, 16), num_warps=8, num_stages=3)
        return [tiles, dict(tiles, num_stages=4), dict(tiles, BLOCK_M=128)]
    if operand.element_size() == 2 and rows >= 128:
        tiles = dict(BLOCK_M=128, BLOCK_N=block_n, BLOCK_K=_block(inner, 16, 64), num_warps=8, num_stages=3)
        return [tiles, dict(tiles, num_stages=4), dict(tiles, BLOCK_M=64, num_warps=4, num_stages=4)]
    return [dict(BLOCK_M=64, BLOCK_N=block_n, BLOCK_K=_block(inner, 16, 64), num_warps=4, num_stages=3)]


# Channels of the padded input that `conv2d_forward_taps_kernel` reads (inputs with at most this
# many run there): 4 keeps every pixel 8-byte aligned in 16-bit.
TAP_CHANNELS = 4


def takes_taps_kernel(x: torch.Tensor, weight: torch.Tensor, groups: int, dilation) -> bool:
    """A channels_last input with few channels (a stem), one group, dilation 1 along W: the
    forward runs `conv2d_forward_taps_kernel` on a channel-padded copy."""
    C = x.shape[1]
    return 1 < C <= TAP_CHANNELS and groups == 1 and dilation[1] == 1 and channels_contiguous(x)


def is_depthwise(weight: torch.Tensor) -> bool:
    """One input channel per group (depthwise, or a single-channel input): the direct kernels run."""
    return weight.shape[1] == 1


def output_layout(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """torch's rule: the output is channels_last when the input or the weight is."""
    def channels_last(t):
        return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if channels_last(x) or channels_last(weight) else torch.contiguous_format


def forward(x, weight, bias, stride, padding, dilation, groups, output_size, activation=None):
    """Convolution of 4-D `x` with `weight`, plus bias and activation.

    `padding` is (top, left): the output size is given, so asymmetric 'same' padding needs no
    extra argument (taps past the bottom or right edge are masked like any padding).
    Returns ``(y, saved)`` where `saved` is what `activation_backward` needs: y itself for ReLU,
    the pre-activation z for GELU, None without an activation.
    """
    N, C, H, W = x.shape
    K, Cg, R, S = weight.shape
    Ho, Wo = output_size
    Kg = K // groups
    memory_format = output_layout(x, weight)
    y = torch.empty((N, K, Ho, Wo), device=x.device, dtype=x.dtype, memory_format=memory_format)
    z = torch.empty_like(y) if activation in SAVES_PREACTIVATION else None
    saved = z if z is not None else (y if activation == "relu" else None)
    M = N * Ho * Wo
    if M == 0 or K == 0:
        return y, saved
    geometry = (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])
    epilogue = dict(HAS_BIAS=bias is not None, ACTIVATION=ACTIVATIONS[activation], STORE_PREACTIVATION=z is not None,
                    ACC_DTYPE=accumulator_dtype(x.dtype))
    pointers = (x, weight, bias if bias is not None else weight, y, z if z is not None else y)
    stride_b = bias.stride(0) if bias is not None else 0
    if is_depthwise(weight):
        block_m, block_c = depthwise_tiles(K)
        launch(conv2d_depthwise_forward_kernel, (cdiv(M, block_m), cdiv(K, block_c)))(
            *pointers, M, H, W, Ho, Wo, R, S, K, Kg,
            *x.stride(), weight.stride(0), weight.stride(2), weight.stride(3), *y.stride(), stride_b, *geometry,
            **epilogue, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4,
        )
        return y, saved
    if takes_taps_kernel(x, weight, groups, dilation):
        _forward_taps(x, weight, y, z, bias, geometry, epilogue)
        return y, saved

    def grid(meta):
        return cdiv(M, meta["BLOCK_M"]), cdiv(Kg, meta["BLOCK_N"]), groups

    launch_tuned(conv2d_forward_kernel, grid, gemm_configs(x, M, Kg, Cg), key=("M", "Cg", "Kg"))(
        *pointers, M, H, W, Ho, Wo, R, S, Cg, Kg,
        *x.stride(), *weight.stride(), *y.stride(), stride_b, *geometry,
        **epilogue, **dot_options(x.dtype, _allow_tf32(TF32_FLAG)),
    )
    return y, saved


def _forward_taps(x, weight, y, z, bias, geometry, epilogue):
    """`forward` through `conv2d_forward_taps_kernel`: x (N, H, W, 4) and w (K, R, S, 4), padded
    with zero channels (an extra pass over x, small beside the convolution: a stem has 3 channels
    against its 64 output channels)."""
    N, C, H, W = x.shape
    K, _, R, S = weight.shape
    Ho, Wo = y.shape[2:]
    M = N * Ho * Wo
    padding = (0, TAP_CHANNELS - C)
    # (N, H, W, 4) and (K, R, S, 4), contiguous (pad returns a 4-channel input's view as it is).
    x_taps = torch.nn.functional.pad(x.permute(0, 2, 3, 1), padding).contiguous()
    w_taps = torch.nn.functional.pad(weight.permute(0, 2, 3, 1), padding).contiguous()
    stride_h, stride_w, pad_h, pad_w, dil_h, _ = geometry

    def grid(meta):
        return cdiv(M, meta["BLOCK_M"]), cdiv(K, meta["BLOCK_N"])

    launch_tuned(conv2d_forward_taps_kernel, grid, gemm_configs(x, M, K, S * TAP_CHANNELS), key=("M", "K", "S"))(
        x_taps, w_taps, bias if bias is not None else weight, y, z if z is not None else y,
        M, H, W, Ho, Wo, R, S, K, x_taps.stride(0), x_taps.stride(1), w_taps.stride(0), w_taps.stride(1),
        *y.stride(), bias.stride(0) if bias is not None else 0, stride_h, stride_w, pad_h, pad_w, dil_h,
        **epilogue, CHANNELS=TAP_CHANNELS, **dot_options(x.dtype, _allow_tf32(TF32_FLAG)),
    )


# activation_backward(dy, saved, activation): the gradient of the pre-activation from the gradient
# of the output, dz = dy * act'(z), with `saved` as `forward` returned it. dz is laid out like
# saved; dy may have any strides. The one activation backward, shared with linear and the
# standalone activations.
activation_backward = elementwise.backward


def backward_input(dz, weight, input_shape, stride, padding, dilation, groups, memory_format):
    """dx: the gradient of the input, from the gradient of the pre-activation output."""
    N, C, H, W = input_shape
    K, Cg, R, S = weight.shape
    Ho, Wo = dz.shape[2:]
    Kg = K // groups
    dx = torch.empty(input_shape, device=dz.device, dtype=dz.dtype, memory_format=memory_format)
    M = N * H * W
    if M == 0 or C == 0:
        return dx
    if dz.numel() == 0:
        return dx.zero_()
    geometry = (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])
    if is_depthwise(weight):
        block_m, block_c = depthwise_tiles(C)
        launch(conv2d_depthwise_backward_input_kernel, (cdiv(M, block_m), cdiv(C, block_c)))(
            dz, weight, dx, M, H, W, Ho, Wo, R, S, C, Kg,
            *dz.stride(), weight.stride(0), weight.stride(2), weight.stride(3), *dx.stride(), *geometry,
            BLOCK_M=block_m, BLOCK_C=block_c, ACC_DTYPE=accumulator_dtype(dz.dtype), num_warps=4,
        )
        return dx
    def grid(meta):
        return cdiv(M, meta["BLOCK_M"]), cdiv(Cg, meta["BLOCK_N"]), groups

    launch_tuned(conv2d_backward_input_kernel, grid, gemm_configs(dz, M, Cg, Kg), key=("M", "Cg", "Kg"))(
        dz, weight, dx, M, H, W, Ho, Wo, R, S, Cg, Kg,
        *dz.stride(), *weight.stride(), *dx.stride(), *geometry,
        ACC_DTYPE=accumulator_dtype(dz.dtype), **dot_options(dz.dtype, _allow_tf32(TF32_FLAG)),
    )
    return dx


def backward_weight(dz, x, weight, stride, padding, dilation, groups, need_weight=True, need_bias=True,
                    splits=None):
    """(dw, db): gradients of the weight and the bias, deterministic (fixed-order split-K).

    `splits` overrides how many slices the reduction over output positions is cut into.
    """
    N, C, H, W = x.shape
    K, Cg, R, S = weight.shape
    Ho, Wo = dz.shape[2:]
    Kg = K // groups
    CRS = Cg * R * S
    acc_dtype = accumulator_torch_dtype(dz.dtype)
    dw = torch.empty_like(weight) if need_weight else None
    db = torch.empty(K, device=dz.device, dtype=weight.dtype) if need_bias else None
    M = N * Ho * Wo
    if M == 0 or K == 0:
        return (dw.zero_() if dw is not None else None), (db.zero_() if db is not None else None)

    geometry = (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])
    acc = accumulator_dtype(dz.dtype)
    if is_depthwise(weight):
        block_rows, block_c = depthwise_tiles(K)
        tiles = cdiv(K, block_c) * R * S
    else:
        # Under the interpreter each program costs Python time, and numpy's dot is as quick on a
        # 256-wide tile: a 512x4608 weight gradient takes 36 programs instead of 576.
        widest = INTERPRETED_MAX_WGRAD_TILE if interpreted_run() else 64
        block_m, block_n, block_rows = _block(Kg, 16, widest), _block(CRS, 16, widest), 32
        tiles = cdiv(Kg, block_m) * cdiv(CRS, block_n) * groups
    if splits is None:
        splits = cdiv(parallel_programs(dz.device), tiles)
    # Each slice of output positions gets a whole number of row blocks, at least one.
    rows_per_split = cdiv(cdiv(M, max(1, min(int(splits), M))), block_rows) * block_rows
    num_splits = cdiv(M, rows_per_split)

    part_dw = torch.empty((num_splits, K, CRS), device=dz.device, dtype=acc_dtype)
    # channels_last x: the wgrad's columns run (r, s, c), so its partials sum into dw seen as
    # (K, R, S, C/groups), a view whose logical order is theirs.
    channels_inner = not is_depthwise(weight) and channels_contiguous(x)
    dw_columns = dw.permute(0, 2, 3, 1) if need_weight and channels_inner else dw
    part_db = torch.empty((num_splits, K), device=dz.device, dtype=acc_dtype) if need_bias else part_dw
    if is_depthwise(weight):
        launch(conv2d_depthwise_backward_weight_kernel, (cdiv(K, block_c), R * S, num_splits))(
            dz, x, part_dw, part_db, M, H, W, Ho, Wo, S, K, Kg, CRS, rows_per_split,
            *dz.stride(), *x.stride(), *geometry,
            COMPUTE_BIAS=need_bias, BLOCK_M=block_rows, BLOCK_C=block_c, ACC_DTYPE=acc, num_warps=4,
        )
    else:
        launch(conv2d_backward_weight_kernel, (cdiv(Kg, block_m), cdiv(CRS, block_n), groups * num_splits))(
            dz, x, part_dw, part_db,
            M, H, W, Ho, Wo, R, S, Cg, Kg, K, CRS, rows_per_split,
            *dz.stride(), *x.stride(), *geometry,
            COMPUTE_BIAS=need_bias, CHANNELS_INNER=channels_inner, BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_K=block_rows, ACC_DTYPE=acc, **dot_options(dz.dtype, _allow_tf32(TF32_FLAG)), num_warps=4,
            # Four stages where both operands are pipelined copies (channels innermost): 96
            # registers and 29 KB, 5 CTAs per SM, in the static sm_90 report.
            num_stages=4 if channels_inner else 3,
        )
    # The partials summed over the splits in a fixed order, each written through dw's and db's strides.
    if need_weight:
        sum_partials(part_dw, dw_columns)
    if need_bias:
        sum_partials(part_db, db)
    return dw, db
