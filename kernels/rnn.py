"""Elman RNN kernels: the cell (one step) and the whole sequence, forward and backward (BPTT).

Notation, one layer and one direction: input x_t (B, I), hidden state h_t (B, H), weights
W_ih (H, I), W_hh (H, H), biases b_ih, b_hh (H,), act = tanh or relu:

    z_t = x_t W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T,    h_t = act(z_t)

Cell: `rnn_cell_forward_kernel` computes h' from x and h in one pass (both products into one
accumulator, bias and activation in the epilogue); its backward is `rnn_cell_grad_kernel`,
dz = dh' * act'(h'), followed by the Linear kernels' matmuls for dx, dh, dW_ih, dW_hh and db.

Sequence forward (`forward`):
  1. The input projection of every step is one large matmul over all T*B rows, done by the
     Linear kernels: xproj = X W_ih^T + (b_ih + b_hh).
  2. `rnn_forward_recurrence_kernel` runs the recurrence, looping over t inside one launch. Each
     program owns BLOCK_B batch rows and the whole hidden vector of those rows, so it depends on
     no other program and needs no synchronisation between programs:
       * resident (H fits one tile, `RESIDENT_MAX_H`): W_hh^T is loaded into registers once and
         h_t stays in registers from step to step;
       * streamed (larger H): each step loops over output tiles of H and, inside, over K tiles of
         W_hh, read from global memory (L2-resident after the first step); h_{t-1} is read back
         from an fp32 ping-pong workspace the program wrote the step before, with a
         `tl.debug_barrier()` between the writes of one step and the reads of the next.
     Tiling H across programs instead would need every program to see all of h_{t-1} before
     step t, a grid-wide barrier per step. Triton's interpreter runs a grid's programs one after
     another, so such a barrier would deadlock there and could never be tested on a CPU; the
     kernels therefore parallelise over batch rows only.
  3. Outputs go to a `hidden` buffer of T + D rows (D = number of directions) and D*H columns:
     row 0 holds h0 of the forward direction, rows 1..T the outputs h_t, row T + 1 h0 of the
     reverse direction. The hidden state each step consumed is then a plain view of it (rows
     0..T-1 forward, rows 2..T+1 reverse), which is what dW_hh needs.

Sequence backward (`backward`, docs/rnn_bptt.md derives it):
  1. `rnn_backward_recurrence_kernel` runs time in reverse in one launch, with the same program
     layout and the same resident/streamed variants, and writes for every step
         dz_t = (dy_t + dh_t) * act'(h_t),    dh_{t-1} = dz_t W_hh
     starting from dh_{T-1} = dh_n and ending with dh0.
  2. Everything else is a large matmul over all steps, by the Linear kernels (deterministic:
     split-K partials summed in a fixed order, no atomics): dX = dZ W_ih, dW_ih = dZ^T X,
     dW_hh = dZ^T H_prev, db_ih = db_hh = the column sums of dZ.

Variable lengths (packed sequences): with a per-sequence `lengths`, step t of sequence b is
valid when t < lengths[b]. A step that is not valid leaves h unchanged, writes that carried state
as its output, and passes the gradient through unchanged with dz_t = 0. The reverse direction
visits t = T-1 .. 0, so each sequence starts from h0 at its own last valid step. Outputs at
invalid steps are placeholders that packing drops; they receive no gradient.

States are kept in fp32 (fp64 for fp64 inputs); products accumulate in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels import linear
from tritonprop.kernels._common import (_allow_tf32, _next_pow2, accumulator_dtype, accumulator_torch_dtype, cdiv,
                                        dot_accumulate, dot_options, launch)
from tritonprop.kernels.activations import relu, tanh

NONLINEARITIES = {"tanh": 0, "relu": 1}
# float32 dots follow cuDNN's TF32 flag, as torch's own RNN does.
TF32_FLAG = "cudnn"
# tl.dot needs every tile side >= 16, so a program owns at least 16 batch rows (masked beyond B).
BLOCK_B = 16
# Largest hidden size (padded to a power of two) whose W_hh^T tile a program holds in registers
# for the whole sequence: 128 x 128 is 64 KB of fp32 (32 KB in 16-bit), 64 registers a thread
# at 8 warps; fp64 doubles the bytes, so it stops at 64.
RESIDENT_MAX_H = {torch.float16: 128, torch.bfloat16: 128, torch.float32: 128, torch.float64: 64}
# Tile (BLOCK_N, BLOCK_K) of the streamed variant.
STREAMED_TILES = {torch.float16: (64, 64), torch.bfloat16: (64, 64), torch.float32: (64, 32),
                  torch.float64: (32, 32)}
CELL_TILES = (32, 64, 32)  # (BLOCK_B, BLOCK_N, BLOCK_K) of the cell's fused product
GRAD_BLOCK = (32, 64)


# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _activate(z, RELU: tl.constexpr):
    if RELU:
        return relu(z)
    return tanh(z)


@triton.jit
def _backprop_activation(grad, h, RELU: tl.constexpr):
    """grad * act'(z), written with the output h = act(z): tanh' = 1 - h^2; relu' = [h > 0].

    ReLU is a select, not the product grad * [h > 0]: a non-finite grad where z <= 0 then gives 0,
    as torch's threshold_backward does; and that product failed to compile for fp64 on sm_90.
    """
    if RELU:
        return tl.where(h > 0.0, grad, 0.0)
    return grad * (1.0 - h * h)


@triton.jit
def _offsets_2d(rows, cols, stride_r, stride_c):
    # int64: a (T, B, H) tensor may hold more than 2**31 elements even when each index fits in int32.
    return rows.to(tl.int64)[:, None] * stride_r + cols.to(tl.int64)[None, :] * stride_c


@triton.jit
def _step_position(step, T, REVERSE: tl.constexpr):
    # The forward direction visits t = 0 .. T-1, the reverse direction t = T-1 .. 0.
    if REVERSE:
        return T - 1 - step
    return step


@triton.jit
def _sequence_lengths(lengths_ptr, rows, row_ok, T, HAS_LENGTHS: tl.constexpr):
    if HAS_LENGTHS:
        return tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    return tl.full(rows.shape, T, tl.int32)


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
# Sequence: the recurrence, forward
# ----------------------------------------------------------------------------------------------


@triton.jit
def rnn_forward_recurrence_kernel(
    xproj_ptr, w_hh_ptr, h0_ptr, lengths_ptr, hidden_ptr, h_n_ptr, state_ptr,
    T, B, H,
    stride_xt, stride_xb, stride_xh,
    stride_wn, stride_wk,
    stride_h0b, stride_h0h,
    stride_ht, stride_hb, stride_hh,
    stride_nb, stride_nh,
    stride_ss, stride_sb, stride_sh,
    REVERSE: tl.constexpr, RELU: tl.constexpr, HAS_LENGTHS: tl.constexpr, RESIDENT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    # h_t = act(xproj_t + h_{t-1} W_hh^T) for BLOCK_B batch rows, all T steps in this launch.
    # `hidden` is this direction's column slice of the (T + D, B, D*H) buffer: output of step t
    # in row t + 1, h0 in row 0 (forward) or row T + 1 (reverse). RESIDENT: BLOCK_N = BLOCK_K
    # cover H, W_hh^T and h live in registers; otherwise `state` is a (2, B, H) fp32 ping-pong.
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = _sequence_lengths(lengths_ptr, rows, row_ok, T, HAS_LENGTHS)
    if REVERSE:
        h0_offset = (T + 1).to(tl.int64) * stride_ht
    else:
        h0_offset = 0
    hidden_rows = hidden_ptr + rows.to(tl.int64)[:, None] * stride_hb

    if RESIDENT:
        n = tl.arange(0, BLOCK_N)
        k = tl.arange(0, BLOCK_K)
        mask = row_ok[:, None] & (n < H)[None, :]
        # W_hh^T [k, n] = W_hh [n, k], loaded once for the whole sequence.
        w = tl.load(w_hh_ptr + _offsets_2d(k, n, stride_wk, stride_wn),
                    mask=(k < H)[:, None] & (n < H)[None, :], other=0.0)
        h = tl.load(h0_ptr + _offsets_2d(rows, n, stride_h0b, stride_h0h), mask=mask, other=0.0).to(ACC_DTYPE)
        tl.store(hidden_rows + h0_offset + n[None, :] * stride_hh,
                 h.to(hidden_ptr.dtype.element_ty), mask=mask)
        for step in range(0, T):
            t = _step_position(step, T, REVERSE)
            valid = (t < lengths)[:, None]
            z = tl.load(xproj_ptr + t.to(tl.int64) * stride_xt + _offsets_2d(rows, n, stride_xb, stride_xh),
                        mask=mask, other=0.0).to(ACC_DTYPE)
            z = dot_accumulate(h.to(w.dtype), w, z, INPUT_PRECISION, UPCAST_OPERANDS)
            # Padded columns stay 0: z = 0 there and act(0) = 0 for tanh and relu.
            h = tl.where(valid, _activate(z, RELU), h)
            tl.store(hidden_rows + (t + 1).to(tl.int64) * stride_ht + n[None, :] * stride_hh,
                     h.to(hidden_ptr.dtype.element_ty), mask=mask)
        tl.store(h_n_ptr + _offsets_2d(rows, n, stride_nb, stride_nh), h.to(h_n_ptr.dtype.element_ty), mask=mask)
    else:
        # Slot 0 of the workspace holds h0; step s reads slot s % 2 and writes slot (s + 1) % 2,
        # so h_{t-1} stays intact until every tile of h_t has been computed from it.
        for n_start in range(0, H, BLOCK_N):
            n = n_start + tl.arange(0, BLOCK_N)
            mask = row_ok[:, None] & (n < H)[None, :]
            h0 = tl.load(h0_ptr + _offsets_2d(rows, n, stride_h0b, stride_h0h), mask=mask, other=0.0)
            tl.store(state_ptr + _offsets_2d(rows, n, stride_sb, stride_sh), h0.to(ACC_DTYPE), mask=mask)
            tl.store(hidden_rows + h0_offset + n[None, :] * stride_hh, h0, mask=mask)
        tl.debug_barrier()
        for step in range(0, T):
            t = _step_position(step, T, REVERSE)
            valid = (t < lengths)[:, None]
            read = state_ptr + (step % 2) * stride_ss
            write = state_ptr + ((step + 1) % 2) * stride_ss
            for n_start in range(0, H, BLOCK_N):
                n = n_start + tl.arange(0, BLOCK_N)
                mask = row_ok[:, None] & (n < H)[None, :]
                z = tl.load(xproj_ptr + t.to(tl.int64) * stride_xt + _offsets_2d(rows, n, stride_xb, stride_xh),
                            mask=mask, other=0.0).to(ACC_DTYPE)
                for k_start in range(0, H, BLOCK_K):
                    k = k_start + tl.arange(0, BLOCK_K)
                    h_k = tl.load(read + _offsets_2d(rows, k, stride_sb, stride_sh),
                                  mask=row_ok[:, None] & (k < H)[None, :], other=0.0)
                    w = tl.load(w_hh_ptr + _offsets_2d(k, n, stride_wk, stride_wn),
                                mask=(k < H)[:, None] & (n < H)[None, :], other=0.0)
                    z = dot_accumulate(h_k.to(w.dtype), w, z, INPUT_PRECISION, UPCAST_OPERANDS)
                h_prev = tl.load(read + _offsets_2d(rows, n, stride_sb, stride_sh), mask=mask, other=0.0)
                h = tl.where(valid, _activate(z, RELU), h_prev)
                tl.store(write + _offsets_2d(rows, n, stride_sb, stride_sh), h, mask=mask)
                tl.store(hidden_rows + (t + 1).to(tl.int64) * stride_ht + n[None, :] * stride_hh,
                         h.to(hidden_ptr.dtype.element_ty), mask=mask)
            # Every thread of the program must see all of h_t before any reads it for step t + 1.
            tl.debug_barrier()
        final = state_ptr + (T % 2) * stride_ss
        for n_start in range(0, H, BLOCK_N):
            n = n_start + tl.arange(0, BLOCK_N)
            mask = row_ok[:, None] & (n < H)[None, :]
            h = tl.load(final + _offsets_2d(rows, n, stride_sb, stride_sh), mask=mask, other=0.0)
            tl.store(h_n_ptr + _offsets_2d(rows, n, stride_nb, stride_nh), h.to(h_n_ptr.dtype.element_ty),
                     mask=mask)


# ----------------------------------------------------------------------------------------------
# Sequence: the recurrence, backward (BPTT)
# ----------------------------------------------------------------------------------------------


@triton.jit
def rnn_backward_recurrence_kernel(
    dy_ptr, dh_n_ptr, hidden_ptr, w_hh_ptr, lengths_ptr, dz_ptr, dh0_ptr, grad_ptr,
    T, B, H,
    stride_dyt, stride_dyb, stride_dyh,
    stride_nb, stride_nh,
    stride_ht, stride_hb, stride_hh,
    stride_wn, stride_wk,
    stride_dzt, stride_dzb, stride_dzh,
    stride_0b, stride_0h,
    stride_gb, stride_gh,
    REVERSE: tl.constexpr, RELU: tl.constexpr, HAS_LENGTHS: tl.constexpr, RESIDENT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    # Time in reverse, for BLOCK_B batch rows. g is dL/dh_t from the future (dh_n at the start):
    #   dz_t = (dy_t + g) * act'(h_t),   then g = dL/dh_{t-1} = dz_t W_hh;   finally dh0 = g.
    # RESIDENT: W_hh and g live in registers; otherwise g lives in a (B, H) fp32 workspace,
    # updated in place tile by tile once all of dz_t has been written.
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = _sequence_lengths(lengths_ptr, rows, row_ok, T, HAS_LENGTHS)
    hidden_rows = hidden_ptr + rows.to(tl.int64)[:, None] * stride_hb

    if RESIDENT:
        n = tl.arange(0, BLOCK_N)
        k = tl.arange(0, BLOCK_K)
        mask = row_ok[:, None] & (n < H)[None, :]
        # dh_{t-1}[k] = sum_n dz_t[n] W_hh[n, k]: W_hh read as is, rows n and columns k.
        w = tl.load(w_hh_ptr + _offsets_2d(n, k, stride_wn, stride_wk),
                    mask=(n < H)[:, None] & (k < H)[None, :], other=0.0)
        g = tl.load(dh_n_ptr + _offsets_2d(rows, k, stride_nb, stride_nh), mask=mask, other=0.0).to(ACC_DTYPE)
        for step in range(0, T):
            t = _step_position(step, T, not REVERSE)
            valid = (t < lengths)[:, None]
            t64 = t.to(tl.int64)
            dy = tl.load(dy_ptr + t64 * stride_dyt + _offsets_2d(rows, n, stride_dyb, stride_dyh),
                         mask=mask, other=0.0).to(ACC_DTYPE)
            h = tl.load(hidden_rows + (t64 + 1) * stride_ht + n[None, :] * stride_hh, mask=mask, other=0.0)
            dz = tl.where(valid, _backprop_activation(dy + g, h.to(ACC_DTYPE), RELU), 0.0)
            dz = dz.to(dz_ptr.dtype.element_ty)
            tl.store(dz_ptr + t64 * stride_dzt + _offsets_2d(rows, n, stride_dzb, stride_dzh), dz, mask=mask)
            # The product uses dz as stored (rounded to the input dtype), as the streamed variant does.
            dh = dot_accumulate(dz.to(w.dtype), w, tl.zeros([BLOCK_B, BLOCK_K], ACC_DTYPE), INPUT_PRECISION,
                                UPCAST_OPERANDS)
            g = tl.where(valid, dh, g)
        tl.store(dh0_ptr + _offsets_2d(rows, k, stride_0b, stride_0h), g.to(dh0_ptr.dtype.element_ty), mask=mask)
    else:
        for k_start in range(0, H, BLOCK_K):
            k = k_start + tl.arange(0, BLOCK_K)
            mask = row_ok[:, None] & (k < H)[None, :]
            g = tl.load(dh_n_ptr + _offsets_2d(rows, k, stride_nb, stride_nh), mask=mask, other=0.0)
            tl.store(grad_ptr + _offsets_2d(rows, k, stride_gb, stride_gh), g.to(ACC_DTYPE), mask=mask)
        tl.debug_barrier()
        for step in range(0, T):
            t = _step_position(step, T, not REVERSE)
            valid = (t < lengths)[:, None]
            t64 = t.to(tl.int64)
            # Phase 1: all of dz_t, elementwise.
            for n_start in range(0, H, BLOCK_N):
                n = n_start + tl.arange(0, BLOCK_N)
                mask = row_ok[:, None] & (n < H)[None, :]
                g = tl.load(grad_ptr + _offsets_2d(rows, n, stride_gb, stride_gh), mask=mask, other=0.0)
                dy = tl.load(dy_ptr + t64 * stride_dyt + _offsets_2d(rows, n, stride_dyb, stride_dyh),
                             mask=mask, other=0.0).to(ACC_DTYPE)
                h = tl.load(hidden_rows + (t64 + 1) * stride_ht + n[None, :] * stride_hh, mask=mask, other=0.0)
                dz = tl.where(valid, _backprop_activation(dy + g, h.to(ACC_DTYPE), RELU), 0.0)
                tl.store(dz_ptr + t64 * stride_dzt + _offsets_2d(rows, n, stride_dzb, stride_dzh),
                         dz.to(dz_ptr.dtype.element_ty), mask=mask)
            tl.debug_barrier()
            # Phase 2: g = dz_t W_hh, tile by tile; each tile of g is read and written by this
            # tile alone, so the update can be in place.
            for k_start in range(0, H, BLOCK_K):
                k = k_start + tl.arange(0, BLOCK_K)
                mask = row_ok[:, None] & (k < H)[None, :]
                dh = tl.zeros([BLOCK_B, BLOCK_K], ACC_DTYPE)
                for n_start in range(0, H, BLOCK_N):
                    n = n_start + tl.arange(0, BLOCK_N)
                    dz = tl.load(dz_ptr + t64 * stride_dzt + _offsets_2d(rows, n, stride_dzb, stride_dzh),
                                 mask=row_ok[:, None] & (n < H)[None, :], other=0.0)
                    w = tl.load(w_hh_ptr + _offsets_2d(n, k, stride_wn, stride_wk),
                                mask=(n < H)[:, None] & (k < H)[None, :], other=0.0)
                    dh = dot_accumulate(dz.to(w.dtype), w, dh, INPUT_PRECISION, UPCAST_OPERANDS)
                g = tl.load(grad_ptr + _offsets_2d(rows, k, stride_gb, stride_gh), mask=mask, other=0.0)
                tl.store(grad_ptr + _offsets_2d(rows, k, stride_gb, stride_gh), tl.where(valid, dh, g), mask=mask)
            tl.debug_barrier()
        for k_start in range(0, H, BLOCK_K):
            k = k_start + tl.arange(0, BLOCK_K)
            mask = row_ok[:, None] & (k < H)[None, :]
            g = tl.load(grad_ptr + _offsets_2d(rows, k, stride_gb, stride_gh), mask=mask, other=0.0)
            tl.store(dh0_ptr + _offsets_2d(rows, k, stride_0b, stride_0h), g.to(dh0_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch planning
# ----------------------------------------------------------------------------------------------


def plan_recurrence(dtype: torch.dtype, H: int) -> dict:
    """Constexprs of the recurrence kernels: resident when W_hh^T fits one register tile.

    Not autotuned: each variant would multiply compile time on a fresh GPU machine.
    """
    padded = max(16, _next_pow2(H))
    resident = padded <= RESIDENT_MAX_H[dtype]
    if resident:
        block_n = block_k = padded
    else:
        block_n, block_k = STREAMED_TILES[dtype]
    num_warps = 8 if resident and padded >= 128 else 4
    return dict(RESIDENT=resident, BLOCK_B=BLOCK_B, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps)


def _flat_steps(x: torch.Tensor) -> torch.Tensor:
    """A time-major (T, B, F) tensor as the (T*B, F) rows of one matmul, without a copy."""
    T, B, F = x.shape
    try:
        return x.view(T * B, F)
    except RuntimeError:
        raise ValueError(f"rnn kernels: x of shape {tuple(x.shape)} and strides {x.stride()} does not flatten "
                         "to (T*B, F) rows; pass a time-major tensor") from None


def _projection_bias(b_ih, b_hh, acc_dtype):
    # b_ih + b_hh, added once in the input projection's epilogue; summed in the accumulator dtype
    # so that 16-bit biases are rounded once, not twice.
    if b_ih is None:
        return None
    return b_ih.to(acc_dtype) + b_hh.to(acc_dtype)


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


# ----------------------------------------------------------------------------------------------
# Launch functions: one layer of the sequence, one or two directions
# ----------------------------------------------------------------------------------------------


def forward(x, h0, weights, nonlinearity, lengths=None):
    """One RNN layer over a whole sequence.

    x: (T, B, I), time-major, so that its (t, b) rows flatten without a copy; h0: (D, B, H); weights: one ``(w_ih, w_hh, b_ih, b_hh)`` per
    direction (D = 1 or 2; biases may be None); lengths: optional int32 (B,) on x's device.
    Returns ``(output, h_n, hidden)``: output (T, B, D*H) is a view of `hidden`, the (T + D, B, D*H)
    buffer that `backward` needs (see the module docstring); h_n is (D, B, H).
    """
    T, B, _ = x.shape
    D = len(weights)
    H = weights[0][1].shape[0]
    acc_torch = accumulator_torch_dtype(x.dtype)
    hidden = torch.empty((T + D, B, D * H), device=x.device, dtype=x.dtype)
    h_n = torch.empty((D, B, H), device=x.device, dtype=x.dtype)
    output = hidden[1:T + 1]
    if D == 2:
        # Row 0 of the reverse columns and row T + 1 of the forward ones belong to no direction:
        # zeros, so that the whole buffer (an output of the rnn_layer op) is defined.
        hidden[0, :, H:].zero_()
        hidden[T + 1, :, :H].zero_()
    if B == 0 or H == 0:
        return output, h_n, hidden
    x2d = _flat_steps(x)
    plan = plan_recurrence(x.dtype, H)
    state = torch.empty((2, B, H), device=x.device, dtype=acc_torch) if not plan["RESIDENT"] else h_n
    for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        xproj2d, _ = linear.forward(x2d, w_ih, _projection_bias(b_ih, b_hh, acc_torch))
        xproj = xproj2d.view(T, B, H)
        column = hidden[:, :, d * H:(d + 1) * H]
        launch(rnn_forward_recurrence_kernel, (cdiv(B, BLOCK_B),))(
            xproj, w_hh, h0[d], lengths if lengths is not None else h_n, column, h_n[d], state,
            T, B, H, *xproj.stride(), *w_hh.stride(), *h0[d].stride(), *column.stride(), *h_n[d].stride(),
            *state.stride(),
            REVERSE=d == 1, RELU=NONLINEARITIES[nonlinearity], HAS_LENGTHS=lengths is not None,
            ACC_DTYPE=accumulator_dtype(x.dtype), **dot_options(x.dtype, _allow_tf32(TF32_FLAG)), **plan,
        )
    return output, h_n, hidden


def backward(d_output, dh_n, x, hidden, weights, nonlinearity, lengths=None, need_x=True, need_h0=True,
             need_weights=True):
    """Gradients of one layer (BPTT) from d_output (T, B, D*H) and dh_n (D, B, H).

    Returns ``(dx, dh0, grads)``, with ``grads`` one ``(dw_ih, dw_hh, db_ih, db_hh)`` per direction
    (biases None when the layer has none); dx, dh0 or grads are None when not needed.
    """
    T, B, I = x.shape
    D = len(weights)
    H = weights[0][1].shape[0]
    has_bias = weights[0][2] is not None
    acc_torch = accumulator_torch_dtype(x.dtype)
    x2d = _flat_steps(x)
    dz = torch.empty((T, B, D * H), device=x.device, dtype=x.dtype)
    dh0 = torch.empty((D, B, H), device=x.device, dtype=x.dtype)
    if B == 0 or H == 0:
        dz.zero_()
        dh0.zero_()
    else:
        plan = plan_recurrence(x.dtype, H)
        grad = torch.empty((B, H), device=x.device, dtype=acc_torch) if not plan["RESIDENT"] else dh0[0]
        for d, (_, w_hh, _, _) in enumerate(weights):
            column = hidden[:, :, d * H:(d + 1) * H]
            dy = d_output[:, :, d * H:(d + 1) * H]
            dz_d = dz[:, :, d * H:(d + 1) * H]
            launch(rnn_backward_recurrence_kernel, (cdiv(B, BLOCK_B),))(
                dy, dh_n[d], column, w_hh, lengths if lengths is not None else dh0, dz_d, dh0[d], grad,
                T, B, H, *dy.stride(), *dh_n[d].stride(), *column.stride(), *w_hh.stride(), *dz_d.stride(),
                *dh0[d].stride(), *grad.stride(),
                REVERSE=d == 1, RELU=NONLINEARITIES[nonlinearity], HAS_LENGTHS=lengths is not None,
                ACC_DTYPE=accumulator_dtype(x.dtype), **dot_options(x.dtype, _allow_tf32(TF32_FLAG)), **plan,
            )

    dz2d = dz.view(T * B, D * H)
    dx = None
    if need_x:
        # Both directions read the same x, so dX = [dZ_fwd dZ_rev] [W_ih_fwd; W_ih_rev]: one matmul.
        w_ih = weights[0][0] if D == 1 else torch.cat([w[0] for w in weights])
        dx2d = linear.backward_input(dz2d, w_ih)
        dx = dx2d.view(T, B, I)
    grads = None
    if need_weights:
        dw_ih, db = linear.backward_weight(dz2d, x2d, need_bias=has_bias)
        grads = []
        for d in range(D):
            # The state step t consumed: row t of `hidden` forward (h0 first), row t + 2 reverse.
            first = 0 if d == 0 else 2
            h_prev = hidden[first:first + T, :, d * H:(d + 1) * H]
            dw_hh, _ = linear.backward_weight(dz2d[:, d * H:(d + 1) * H], h_prev.view(T * B, H), need_bias=False)
            db_d = db[d * H:(d + 1) * H] if has_bias else None
            # b_ih and b_hh enter z as one sum, so they share one gradient; each gets its own tensor.
            grads.append((dw_ih[d * H:(d + 1) * H], dw_hh, db_d, db_d.clone() if has_bias else None))
    return dx, dh0 if need_h0 else None, grads
