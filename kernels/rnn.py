"""Elman RNN cell kernels: one step, forward and backward.

Notation: input x (B, I), hidden state h (B, H), weights W_ih (H, I), W_hh (H, H), biases b_ih,
b_hh (H,), act = tanh or relu:

    z = x W_ih^T + b_ih + b_hh + h W_hh^T,    h' = act(z)

`rnn_cell_forward_kernel` computes h' from x and h in one pass (both products into one
accumulator, bias and activation in the epilogue); its backward is `rnn_cell_grad_kernel`,
dz = dh' * act'(h'), followed by the Linear kernels' matmuls for dx, dh, dW_ih, dW_hh and db.

The whole sequence, forward and BPTT, runs on the recurrence engine that the RNN shares with the
LSTM and the GRU (kernels/recurrence.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels import linear
from tritonprop.kernels._common import _allow_tf32, accumulator_dtype, cdiv, dot_accumulate, dot_options, launch
from tritonprop.kernels.recurrence import TF32_FLAG, _activate, _backprop_activation, _offsets_2d

NONLINEARITIES = {"tanh": 0, "relu": 1}
CELL_TILES = (32, 64, 32)  # (BLOCK_B, BLOCK_N, BLOCK_K) of the cell's fused product
GRAD_BLOCK = (32, 64)


# ----------------------------------------------------------------------------------------------
# Cell
# ----------------------------------------------------------------------------------------------


@triton.jit
def rnn_cell_forward_kernel(
    x_ptr, h_ptr, w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr, out_ptr,
    B, I, H,
    stride_xb, stride_xi, stride_hb, stride_hh,
    stride_wih_n, stride_wih_k, stride_whh_n, stride_whh_k,
    stride_bih, stride_bhh, stride_ob, stride_oh,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    # One [BLOCK_B, BLOCK_N] tile of h' = act(x W_ih^T + h W_hh^T + b_ih + b_hh): both products
    # accumulate into one tile, so z is never written to memory.
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < H
    k_offsets = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=ACC_DTYPE)
    for k_start in range(0, I, BLOCK_K):
        k = k_start + k_offsets
        x = tl.load(x_ptr + _offsets_2d(rows, k, stride_xb, stride_xi),
                    mask=row_ok[:, None] & (k < I)[None, :], other=0.0)
        # W_ih^T [k, n] is W_ih [n, k]: the same tensor read with its strides swapped.
        w = tl.load(w_ih_ptr + _offsets_2d(k, cols, stride_wih_k, stride_wih_n),
                    mask=(k < I)[:, None] & col_ok[None, :], other=0.0)
        acc = dot_accumulate(x, w, acc, INPUT_PRECISION, UPCAST_OPERANDS)
    for k_start in range(0, H, BLOCK_K):
        k = k_start + k_offsets
        h = tl.load(h_ptr + _offsets_2d(rows, k, stride_hb, stride_hh),
                    mask=row_ok[:, None] & (k < H)[None, :], other=0.0)
        w = tl.load(w_hh_ptr + _offsets_2d(k, cols, stride_whh_k, stride_whh_n),
                    mask=(k < H)[:, None] & col_ok[None, :], other=0.0)
        acc = dot_accumulate(h, w, acc, INPUT_PRECISION, UPCAST_OPERANDS)
    if HAS_BIAS:
        acc += tl.load(b_ih_ptr + cols.to(tl.int64) * stride_bih, mask=col_ok, other=0.0).to(ACC_DTYPE)[None, :]
        acc += tl.load(b_hh_ptr + cols.to(tl.int64) * stride_bhh, mask=col_ok, other=0.0).to(ACC_DTYPE)[None, :]
    out = _activate(acc, RELU)
    tl.store(out_ptr + _offsets_2d(rows, cols, stride_ob, stride_oh), out.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def rnn_cell_grad_kernel(
    dy_ptr, y_ptr, dz_ptr, B, H,
    stride_dyb, stride_dyh, stride_yb, stride_yh, stride_dzb, stride_dzh,
    RELU: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # dz = dy * act'(z), with act' computed from the cell's output y = act(z).
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < B)[:, None] & (cols < H)[None, :]
    dy = tl.load(dy_ptr + _offsets_2d(rows, cols, stride_dyb, stride_dyh), mask=mask, other=0.0).to(ACC_DTYPE)
    y = tl.load(y_ptr + _offsets_2d(rows, cols, stride_yb, stride_yh), mask=mask, other=0.0).to(ACC_DTYPE)
    dz = _backprop_activation(dy, y, RELU)
    tl.store(dz_ptr + _offsets_2d(rows, cols, stride_dzb, stride_dzh), dz.to(dz_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch functions: cell
# ----------------------------------------------------------------------------------------------


def cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh) for x (B, I) and h (B, H); a new (B, H) tensor."""
    B, I = x.shape
    H = w_hh.shape[0]
    out = torch.empty((B, H), device=x.device, dtype=x.dtype)
    if out.numel() == 0:
        return out
    block_b, block_n, block_k = CELL_TILES
    has_bias = b_ih is not None
    launch(rnn_cell_forward_kernel, (cdiv(B, block_b), cdiv(H, block_n)))(
        x, h, w_ih, w_hh, b_ih if has_bias else out, b_hh if has_bias else out, out,
        B, I, H, *x.stride(), *h.stride(), *w_ih.stride(), *w_hh.stride(),
        b_ih.stride(0) if has_bias else 0, b_hh.stride(0) if has_bias else 0, *out.stride(),
        HAS_BIAS=has_bias, RELU=NONLINEARITIES[nonlinearity],
        BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=block_k, ACC_DTYPE=accumulator_dtype(x.dtype),
        **dot_options(x.dtype, _allow_tf32(TF32_FLAG)), num_warps=4,
    )
    return out


def cell_backward(dy, x, h, w_ih, w_hh, y, nonlinearity, need_x=True, need_h=True, need_w_ih=True,
                  need_w_hh=True, need_bias=True):
    """Gradients of the cell from dy = dL/dh'. Returns ``(dx, dh, dw_ih, dw_hh, db)``, None where
    not needed; db is the gradient of b_ih and of b_hh alike."""
    B, H = y.shape
    dz = torch.empty((B, H), device=y.device, dtype=y.dtype)
    if dz.numel():
        block_b, block_n = GRAD_BLOCK
        launch(rnn_cell_grad_kernel, (cdiv(B, block_b), cdiv(H, block_n)))(
            dy, y, dz, B, H, *dy.stride(), *y.stride(), *dz.stride(),
            RELU=NONLINEARITIES[nonlinearity], BLOCK_B=block_b, BLOCK_N=block_n,
            ACC_DTYPE=accumulator_dtype(y.dtype), num_warps=4,
        )
    else:
        dz.zero_()
    dx = linear.backward_input(dz, w_ih) if need_x else None
    dh = linear.backward_input(dz, w_hh) if need_h else None
    dw_ih = db = dw_hh = None
    if need_w_ih or need_bias:
        dw_ih, db = linear.backward_weight(dz, x, need_weight=need_w_ih, need_bias=need_bias)
    if need_w_hh:
        dw_hh, _ = linear.backward_weight(dz, h, need_bias=False)
    return dx, dh, dw_ih, dw_hh, db
