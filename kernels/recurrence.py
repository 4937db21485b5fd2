"""The recurrence engine: one layer of an RNN, LSTM or GRU over a whole sequence, forward and BPTT.

Notation, one layer and one direction: x_t (B, I), h_t (B, H), G gate blocks per hidden unit
(RNN 1, LSTM 4 in torch's order i, f, g, o; GRU 3, r, z, n), W_ih (G*H, I), W_hh (G*H, H):

    a_t = x_t W_ih^T + b  +  h_{t-1} W_hh^T          the gate pre-activations, (B, G*H)
    RNN:  h_t = act(a_t)
    LSTM: i, f, g, o = sig(a_i), sig(a_f), tanh(a_g), sig(a_o);  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)
    GRU:  r, z = sig(a_r), sig(a_z);  n = tanh(ax_n + r (h_{t-1} W_hn^T + b_hn));  h_t = (1 - z) n + z h_{t-1}

Work outside the recurrence is a few large matmuls by the Linear kernels: the input projection of
every step at once, xproj = X W_ih^T + b (all T*B rows), and after BPTT dX = dA W_ih,
dW_ih = dA^T X, dW_hh = dA_h^T H_prev and the bias sums (deterministic: split-K partials summed
in a fixed order).

The recurrence: one step, two phases
------------------------------------
The step's matmul is transposed, so that the G*H gate rows are its M dimension and the batch its
N: a_t^T = W_hh h_{t-1}^T. Its grid is a 3-D set of programs, (M tile, K split, batch tile):

        program (m, s, b) owns W_hh[m*BLOCK_M : (m+1)*BLOCK_M,  s*BLOCK_K : (s+1)*BLOCK_K]
                     and computes the partial product of that slice with h_{t-1}[b rows, s slice]

  phase 1, `_partial_product`: partials[s][b, m] = W_hh[m, s slice] . h_{t-1}[b, s slice]^T
  phase 2, `_forward_update`: every hidden unit sums its G gates' S partials in a fixed order,
           adds xproj_t, and runs the cell's update (activations, cell state, output) in one pass.

Phase 2 is split across the same programs by (unit tile, batch tile); it reads partials that
other programs wrote, and phase 1 of the next step reads h_t that other programs wrote, so the
programs meet twice per step. BLOCK_M is 64, wgmma's M; K is split until the grid holds enough
programs (`plan`), and each program's W_hh slice is at most 64 x 128.

Two ways to run the steps, with the same phase functions:
  * persistent (`recurrence_forward_persistent_kernel`): one launch loops over all T steps. Each
    program loads its W_hh slice once, before the loop, and keeps it on chip for the whole
    sequence; programs meet at a grid-wide barrier (`_grid_barrier`, an atomic counter and a spin).
    A spin barrier deadlocks unless every program is resident at once, so the launch is
    cooperative and `plan` takes this path only when the grid fits the GPU's SMs at the
    kernel's occupancy;
  * per step (`recurrence_product_kernel`, `recurrence_forward_update_kernel`): one launch
    per phase per step, the launch boundary being the barrier. This runs under Triton's
    interpreter (which runs a grid's programs one after another, so a spin barrier would never
    be passed by a second program) and wherever the grid does not fit.

BPTT (`backward`) runs time in reverse with the same two phases in the other order. With
g_t = dL/dh_t from above plus from the future, phase 2 turns g_t (and, for the LSTM, the carried
dL/dc_t) into the gate gradients dA_t; phase 1 multiplies them by W_hh read transposed
(dh_{t-1} = dA_h,t W_hh), with the H units of h_{t-1} on M and the G*H gate rows split along K.
docs/rnn_bptt.md derives every line of `_backward_update` for the three cells.

Buffers (per layer, D = number of directions):
  hidden (T + D, B, D*H), input dtype: row 0 holds h0 of the forward direction, rows 1..T the
      outputs h_t, row T + 1 h0 of the reverse direction; the state step t consumed is then row
      t (forward) or t + 2 (reverse), a plain view for dW_hh.
  cells (T + D, B, D*H), accumulator dtype, LSTM only: c_t in the same layout.
  gates (T, B, D*4H), accumulator dtype: what BPTT reads back: LSTM i, f, g, o; GRU r, z, n and
      the recurrent part of n's pre-activation, hn = h W_hn^T + b_hn.
Variable lengths (packed sequences): step t of sequence b is valid when t < lengths[b]; an invalid
step carries the state (h and c) unchanged and, in BPTT, passes the gradient through with zero
gate gradients. States are fp32 (fp64 for fp64 inputs); products accumulate in fp32.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from tritonprop import backend
from tritonprop.kernels import linear
from tritonprop.kernels._common import (_allow_tf32, _next_pow2, accumulator_dtype, accumulator_torch_dtype, cdiv,
                                        allocating_only, capturing, ctas_per_sm, dot_accumulate, dot_options,
                                        interpreted_run, launch, streaming_multiprocessors)
from tritonprop.kernels.activations import relu, tanh

# The cells, as the kernels' CELL constexpr.
RNN_TANH, RNN_RELU, LSTM, GRU = 0, 1, 2, 3
CELLS = {"rnn_tanh": RNN_TANH, "rnn_relu": RNN_RELU, "lstm": LSTM, "gru": GRU}
GATES = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU: 3}
# Gate values saved per hidden unit for BPTT (LSTM i, f, g, o; GRU r, z, n, hn).
SAVED_GATES = {RNN_TANH: 0, RNN_RELU: 0, LSTM: 4, GRU: 4}
# float32 dots follow cuDNN's TF32 flag, as torch's own RNNs do.
TF32_FLAG = "cudnn"

# wgmma's M: a program's slice of W_hh has 64 rows (the last M tile is masked).
BLOCK_M = 64
# The widest K slice a program keeps on chip: 64 x 128 is 16 KB in 16-bit, 32 KB in fp32.
MAX_BLOCK_K = {torch.float16: 128, torch.bfloat16: 128, torch.float32: 128, torch.float64: 64}
# tl.dot needs every tile side >= 16; a batch tile is 16 to 64 rows.
MIN_BLOCK, MAX_BLOCK_B = 16, 64
# K is split until the grid has this many programs, where the sequence allows it (a quarter of
# an H200's 132 SMs; more splits add partial sums to every unit's update).
TARGET_PROGRAMS = 32
# Under the interpreter the programs of a grid run one after another, each a pass of a Python
# loop: splitting adds passes and partial sums and buys nothing, so the plan aims at one program,
# and a batch tile may be as wide as numpy likes (there are no registers to run out of).
INTERPRETED_TARGET_PROGRAMS = 1
INTERPRETED_MAX_BLOCK_B = 512
NUM_WARPS = 4
# CTAs per SM of the persistent kernels at their widest tiles (64 x 128, 16-bit) on sm_90, as the
# static report reads them (about 110 registers at 4 warps): what a capture assumes.
CAPTURED_CTAS_PER_SM = 4


# ----------------------------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _offsets_2d(rows, cols, stride_r, stride_c):
    # int64: a (T, B, G*H) tensor may hold more than 2**31 elements even when each index fits in int32.
    return rows.to(tl.int64)[:, None] * stride_r + cols.to(tl.int64)[None, :] * stride_c


@triton.jit
def _step_position(step, T, REVERSE: tl.constexpr):
    # The forward direction visits t = 0 .. T-1, the reverse direction t = T-1 .. 0.
    if REVERSE:
        return T - 1 - step
    return step


@triton.jit
def _previous_row(t, REVERSE: tl.constexpr):
    # The row of `hidden` (and `cells`) holding the state step t consumed: h0 sits in row 0 for
    # the forward direction and in row T + 1 for the reverse one, step t's output in row t + 1.
    if REVERSE:
        return t + 2
    return t


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
def _grid_barrier(sync_ptr, generation, num_programs):
    """Wait until every program of the grid has arrived here `generation` times.

    The counter only grows: barrier k is passed once it reads k * num_programs. A scalar atomic
    is issued by one thread of the program; the block barrier before it makes every thread's
    stores part of what its release publishes, and the one after it holds every thread until the
    acquire has seen all the other programs' stores.
    """
    tl.debug_barrier()
    arrived = tl.atomic_add(sync_ptr, 1, sem="acq_rel", scope="gpu") + 1
    target = generation * num_programs
    while arrived < target:
        arrived = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _program_tiles(pid, M_TILES, SPLITS):
    # program id -> (M tile, K split, batch tile), M fastest: the programs of one batch tile and
    # one split are neighbours, so they share their h slice in L2.
    m_tile = pid % M_TILES
    split = (pid // M_TILES) % SPLITS
    b_tile = pid // (M_TILES * SPLITS)
    return m_tile, split, b_tile


@triton.jit
def _load_weight_slice(w_ptr, stride_wm, stride_wk, M, K, m_tile, split,
                       BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """This program's [BLOCK_M, BLOCK_K] slice of W (W_hh forward, W_hh^T backward, by strides)."""
    m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    k = split * BLOCK_K + tl.arange(0, BLOCK_K)
    return tl.load(w_ptr + _offsets_2d(m, k, stride_wm, stride_wk), mask=(m < M)[:, None] & (k < K)[None, :],
                   other=0.0)


@triton.jit
def _partial_product(w, v_ptr, stride_vb, stride_vk, partial_ptr, stride_pb, stride_pm, M, K, B,
                     m_tile, split, b_tile,
                     BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr,
                     ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr):
    """Phase 1: partial[b, m] = sum over this split's k of w[m, k] v[b, k].

    Forward, v is h_{t-1} and m runs over the G*H gate rows; backward, v is the gate gradients
    dA_h,t and m runs over the H units of h_{t-1}. v was written by other programs in the previous
    phase, so it is read through L2 (".cg"), never from a stale L1 line.
    """
    m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    k = split * BLOCK_K + tl.arange(0, BLOCK_K)
    b = b_tile * BLOCK_B + tl.arange(0, BLOCK_B)
    v = tl.load(v_ptr + _offsets_2d(b, k, stride_vb, stride_vk), mask=(b < B)[:, None] & (k < K)[None, :],
                other=0.0, cache_modifier=".cg")
    # a^T [m, b] = W [m, k] @ v^T [k, b]: the weight slice is the M x K operand.
    acc = dot_accumulate(w, tl.trans(v).to(w.dtype), tl.zeros([BLOCK_M, BLOCK_B], ACC_DTYPE), INPUT_PRECISION,
                         UPCAST_OPERANDS)
    tl.store(partial_ptr + _offsets_2d(m, b, stride_pm, stride_pb), acc, mask=(m < M)[:, None] & (b < B)[None, :])


@triton.jit
def _gathered_sum(partial_ptr, stride_ps, stride_pb, stride_pm, splits, rows, cols, mask, first_col, start):
    """start + sum over the splits (in order: deterministic) of partial[s][rows, first_col + cols]."""
    total = start
    for s in range(0, splits):
        total += tl.load(partial_ptr + s * stride_ps + _offsets_2d(rows, first_col + cols, stride_pb, stride_pm),
                         mask=mask, other=0.0, cache_modifier=".cg")
    return total




@triton.jit
def _sequence_lengths(lengths_ptr, rows, row_ok, T, HAS_LENGTHS: tl.constexpr):
    if HAS_LENGTHS:
        return tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    return tl.full(rows.shape, T, tl.int32)


@triton.jit
def _update_tile(u_tile, b_tile, t, T, H, B, lengths_ptr, HAS_LENGTHS: tl.constexpr,
                 BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr):
    """Phase 2's [BLOCK_B, BLOCK_U] tile: its batch rows, hidden units, mask, and which rows' step
    t is valid (t < length)."""
    rows = b_tile * BLOCK_B + tl.arange(0, BLOCK_B)
    units = u_tile * BLOCK_U + tl.arange(0, BLOCK_U)
    row_ok = rows < B
    mask = row_ok[:, None] & (units < H)[None, :]
    valid = (t < _sequence_lengths(lengths_ptr, rows, row_ok, T, HAS_LENGTHS))[:, None]
    return rows, units, mask, valid


@triton.jit
def _pre_activation(gate, xproj_row, stride_xb, stride_xg, partial_ptr, stride_ps, stride_pb, stride_pm, splits,
                    rows, units, mask, H, ACC_DTYPE: tl.constexpr):
    # a_gate = xproj_t + the partial products of h_{t-1} W_hh^T for this gate's rows, split by split.
    x_part = tl.load(xproj_row + _offsets_2d(rows, gate * H + units, stride_xb, stride_xg), mask=mask,
                     other=0.0).to(ACC_DTYPE)
    return _gathered_sum(partial_ptr, stride_ps, stride_pb, stride_pm, splits, rows, units, mask, gate * H, x_part)


# ----------------------------------------------------------------------------------------------
# Phase 2, forward: the fused gate epilogues (activations, cell update, outputs) of one step
# ----------------------------------------------------------------------------------------------


@triton.jit
def _forward_update(partial_ptr, stride_ps, stride_pb, stride_pm, splits,
                    xproj_ptr, stride_xt, stride_xb, stride_xg,
                    b_hn_ptr, stride_bhn,
                    hidden_ptr, stride_ht, stride_hb, stride_hh,
                    cells_ptr, stride_ct, stride_cb, stride_ch,
                    gates_ptr, stride_gt, stride_gb, stride_gg,
                    h_n_ptr, stride_nb, stride_nh, c_n_ptr, stride_cnb, stride_cnh,
                    lengths_ptr, step, T, H, B, u_tile, b_tile,
                    REVERSE: tl.constexpr, CELL: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """Phase 2 of one step for a tile of (batch rows, hidden units): h_t (and c_t) from the gates.

    hidden, cells: this direction's columns of the (T + D, B, D*H) buffers; gates: its (T, B, 4H)
    columns of the saved gate values; h_n, c_n are written at the last step.
    """
    t = _step_position(step, T, REVERSE)
    rows, units, mask, valid = _update_tile(u_tile, b_tile, t, T, H, B, lengths_ptr, HAS_LENGTHS, BLOCK_B, BLOCK_U)
    xproj_row = xproj_ptr + t.to(tl.int64) * stride_xt
    state = _offsets_2d(rows, units, stride_hb, stride_hh)
    h_prev_row = hidden_ptr + _previous_row(t, REVERSE).to(tl.int64) * stride_ht
    h_prev = tl.load(h_prev_row + state, mask=mask, other=0.0, cache_modifier=".cg").to(ACC_DTYPE)
    saved = gates_ptr + t.to(tl.int64) * stride_gt + _offsets_2d(rows, units, stride_gb, stride_gg)

    if CELL < 2:
        a = _pre_activation(0, xproj_row, stride_xb, stride_xg, partial_ptr, stride_ps, stride_pb, stride_pm, splits,
                            rows, units, mask, H, ACC_DTYPE)
        h = tl.where(valid, _activate(a, CELL == 1), h_prev)
    elif CELL == 2:
        # LSTM, gates i, f, g, o: c_t = f c_{t-1} + i g, h_t = o tanh(c_t).
        cell = _offsets_2d(rows, units, stride_cb, stride_ch)
        c_prev = tl.load(cells_ptr + _previous_row(t, REVERSE).to(tl.int64) * stride_ct + cell, mask=mask,
                         other=0.0, cache_modifier=".cg")
        i = tl.sigmoid(_pre_activation(0, xproj_row, stride_xb, stride_xg, partial_ptr, stride_ps, stride_pb,
                                       stride_pm, splits, rows, units, mask, H, ACC_DTYPE))
        f = tl.sigmoid(_pre_activation(1, xproj_row, stride_xb, stride_xg, partial_ptr, stride_ps, stride_pb,
                                       stride_pm, splits, rows, units, mask, H, ACC_DTYPE))
        g = tanh(_pre_activation(2, xproj_row, stride_xb, stride_xg, partial_ptr, stride_ps, stride_pb, stride_pm,
                                 splits, rows, units, mask, H, ACC_DTYPE))
        o = tl.sigmoid(_pre_activation(3, xproj_row, stride_xb, stride_xg, partial_ptr, stride_ps, stride_pb,
                                       stride_pm, splits, rows, units, mask, H, ACC_DTYPE))
        c = tl.where(valid, f * c_prev + i * g, c_prev)
        h = tl.where(valid, o * tanh(c), h_prev)
        tl.store(cells_ptr + (t + 1).to(tl.int64) * stride_ct + cell, c, mask=mask)
        tl.store(saved, i, mask=mask)
        tl.store(saved + H * stride_gg, f, mask=mask)
        tl.store(saved + 2 * H * stride_gg, g, mask=mask)
        tl.store(saved + 3 * H * stride_gg, o, mask=mask)
        if step == T - 1:
            tl.store(c_n_ptr + _offsets_2d(rows, units, stride_cnb, stride_cnh), c.to(c_n_ptr.dtype.element_ty),
                     mask=mask)
    else:
        # GRU, gates r, z, n: n's recurrent part hn = h W_hn^T + b_hn stays inside the reset product.
        r = tl.sigmoid(_pre_activation(0, xproj_row, stride_xb, stride_xg, partial_ptr, stride_ps, stride_pb,
                                       stride_pm, splits, rows, units, mask, H, ACC_DTYPE))
        z = tl.sigmoid(_pre_activation(1, xproj_row, stride_xb, stride_xg, partial_ptr, stride_ps, stride_pb,
                                       stride_pm, splits, rows, units, mask, H, ACC_DTYPE))
        hn = tl.zeros([BLOCK_B, BLOCK_U], ACC_DTYPE)
        if HAS_BIAS:
            hn += tl.load(b_hn_ptr + units * stride_bhn, mask=units < H, other=0.0).to(ACC_DTYPE)[None, :]
        hn = _gathered_sum(partial_ptr, stride_ps, stride_pb, stride_pm, splits, rows, units, mask, 2 * H, hn)
        x_n = tl.load(xproj_row + _offsets_2d(rows, 2 * H + units, stride_xb, stride_xg), mask=mask,
                      other=0.0).to(ACC_DTYPE)
        n = tanh(x_n + r * hn)
        h = tl.where(valid, (1.0 - z) * n + z * h_prev, h_prev)
        tl.store(saved, r, mask=mask)
        tl.store(saved + H * stride_gg, z, mask=mask)
        tl.store(saved + 2 * H * stride_gg, n, mask=mask)
        tl.store(saved + 3 * H * stride_gg, hn, mask=mask)
    tl.store(hidden_ptr + (t + 1).to(tl.int64) * stride_ht + state, h.to(hidden_ptr.dtype.element_ty), mask=mask)
    if step == T - 1:
        tl.store(h_n_ptr + _offsets_2d(rows, units, stride_nb, stride_nh), h.to(h_n_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Phase 2, backward: gate gradients of one step (docs/rnn_bptt.md derives each line)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _backward_update(partial_ptr, stride_ps, stride_pb, stride_pm, splits,
                     d_output_ptr, stride_dyt, stride_dyb, stride_dyh,
                     carry_ptr, stride_rb, stride_rh, dc_ptr, stride_dcb, stride_dch,
                     hidden_ptr, stride_ht, stride_hb, stride_hh,
                     cells_ptr, stride_ct, stride_cb, stride_ch,
                     gates_ptr, stride_gt, stride_gb, stride_gg,
                     da_x_ptr, stride_axt, stride_axb, stride_axg,
                     da_h_ptr, stride_aht, stride_ahb, stride_ahg,
                     lengths_ptr, step, T, H, B, u_tile, b_tile,
                     REVERSE: tl.constexpr, CELL: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """Phase 2 of one BPTT step for a tile of (batch rows, hidden units).

    g_t = dL/dh_t = dy_t + carry + the partial products dA_h,t+1 W_hh of the step after (none at
    the first BPTT step). `carry` holds the part of dL/dh_t that bypasses W_hh (the GRU's z path,
    or all of it across an invalid step); `dc` the LSTM's dL/dc_t. Writes the gate gradients
    dA_x,t (for dX, dW_ih, db_ih) and dA_h,t (for the recurrent product, dW_hh, db_hh; they differ
    only for the GRU's n gate), then replaces carry and dc with their values for step t - 1.
    """
    t = _step_position(step, T, not REVERSE)
    rows, units, mask, valid = _update_tile(u_tile, b_tile, t, T, H, B, lengths_ptr, HAS_LENGTHS, BLOCK_B, BLOCK_U)
    t64 = t.to(tl.int64)
    carry_at = carry_ptr + _offsets_2d(rows, units, stride_rb, stride_rh)
    start = tl.load(d_output_ptr + t64 * stride_dyt + _offsets_2d(rows, units, stride_dyb, stride_dyh), mask=mask,
                    other=0.0).to(ACC_DTYPE)
    start += tl.load(carry_at, mask=mask, other=0.0)
    g = _gathered_sum(partial_ptr, stride_ps, stride_pb, stride_pm, splits, rows, units, mask, 0, start)
    state = _offsets_2d(rows, units, stride_hb, stride_hh)
    saved = gates_ptr + t64 * stride_gt + _offsets_2d(rows, units, stride_gb, stride_gg)
    da_x = da_x_ptr + t64 * stride_axt + _offsets_2d(rows, units, stride_axb, stride_axg)
    out_dtype = da_x_ptr.dtype.element_ty

    if CELL < 2:
        # h_t = act(a): da = g act'(a), written with h_t: tanh' = 1 - h^2, relu' = [h > 0].
        h = tl.load(hidden_ptr + (t64 + 1) * stride_ht + state, mask=mask, other=0.0).to(ACC_DTYPE)
        da = _backprop_activation(g, h, CELL == 1)
        tl.store(da_x, tl.where(valid, da, 0.0).to(out_dtype), mask=mask)
        carry = tl.where(valid, 0.0, g)
    elif CELL == 2:
        cell = _offsets_2d(rows, units, stride_cb, stride_ch)
        c = tl.load(cells_ptr + (t64 + 1) * stride_ct + cell, mask=mask, other=0.0)
        c_prev = tl.load(cells_ptr + _previous_row(t, REVERSE).to(tl.int64) * stride_ct + cell, mask=mask, other=0.0)
        i = tl.load(saved, mask=mask, other=0.0)
        f = tl.load(saved + H * stride_gg, mask=mask, other=0.0)
        gg = tl.load(saved + 2 * H * stride_gg, mask=mask, other=0.0)
        o = tl.load(saved + 3 * H * stride_gg, mask=mask, other=0.0)
        dc_at = dc_ptr + _offsets_2d(rows, units, stride_dcb, stride_dch)
        dc_next = tl.load(dc_at, mask=mask, other=0.0)
        # h_t = o tanh(c_t): dL/dc_t gathers the carried dc and g o tanh'(c_t).
        tanh_c = tanh(c)
        dc = dc_next + g * o * (1.0 - tanh_c * tanh_c)
        tl.store(da_x, tl.where(valid, dc * gg * i * (1.0 - i), 0.0).to(out_dtype), mask=mask)
        tl.store(da_x + H * stride_axg, tl.where(valid, dc * c_prev * f * (1.0 - f), 0.0).to(out_dtype), mask=mask)
        tl.store(da_x + 2 * H * stride_axg, tl.where(valid, dc * i * (1.0 - gg * gg), 0.0).to(out_dtype), mask=mask)
        tl.store(da_x + 3 * H * stride_axg, tl.where(valid, g * tanh_c * o * (1.0 - o), 0.0).to(out_dtype),
                 mask=mask)
        # c_t = f c_{t-1} + i g: the cell state's gradient flows back through f alone.
        tl.store(dc_at, tl.where(valid, dc * f, dc_next), mask=mask)
        carry = tl.where(valid, 0.0, g)
    else:
        h_prev = tl.load(hidden_ptr + _previous_row(t, REVERSE).to(tl.int64) * stride_ht + state, mask=mask,
                         other=0.0).to(ACC_DTYPE)
        r = tl.load(saved, mask=mask, other=0.0)
        z = tl.load(saved + H * stride_gg, mask=mask, other=0.0)
        n = tl.load(saved + 2 * H * stride_gg, mask=mask, other=0.0)
        hn = tl.load(saved + 3 * H * stride_gg, mask=mask, other=0.0)
        # h_t = (1 - z) n + z h_{t-1}
        da_n = g * (1.0 - z) * (1.0 - n * n)
        da_z = g * (h_prev - n) * z * (1.0 - z)
        # n = tanh(ax_n + r hn): r's gradient is da_n hn; hn's (the recurrent side's) is da_n r.
        da_r = da_n * hn * r * (1.0 - r)
        da_r = tl.where(valid, da_r, 0.0).to(out_dtype)
        da_z = tl.where(valid, da_z, 0.0).to(out_dtype)
        tl.store(da_x, da_r, mask=mask)
        tl.store(da_x + H * stride_axg, da_z, mask=mask)
        tl.store(da_x + 2 * H * stride_axg, tl.where(valid, da_n, 0.0).to(out_dtype), mask=mask)
        da_h = da_h_ptr + t64 * stride_aht + _offsets_2d(rows, units, stride_ahb, stride_ahg)
        tl.store(da_h, da_r, mask=mask)
        tl.store(da_h + H * stride_ahg, da_z, mask=mask)
        tl.store(da_h + 2 * H * stride_ahg, tl.where(valid, da_n * r, 0.0).to(out_dtype), mask=mask)
        # ... and h_{t-1} reaches h_t directly through z.
        carry = tl.where(valid, g * z, g)
    tl.store(carry_at, carry, mask=mask)


@triton.jit
def _backward_finish(partial_ptr, stride_ps, stride_pb, stride_pm, splits,
                     carry_ptr, stride_rb, stride_rh, dc_ptr, stride_dcb, stride_dch,
                     dh0_ptr, stride_0b, stride_0h, dc0_ptr, stride_c0b, stride_c0h,
                     H, B, u_tile, b_tile,
                     CELL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr):
    """dh0 = carry + the last step's partial products (dc0 = the carried dc, LSTM)."""
    rows = b_tile * BLOCK_B + tl.arange(0, BLOCK_B)
    units = u_tile * BLOCK_U + tl.arange(0, BLOCK_U)
    mask = (rows < B)[:, None] & (units < H)[None, :]
    carry = tl.load(carry_ptr + _offsets_2d(rows, units, stride_rb, stride_rh), mask=mask, other=0.0)
    dh0 = _gathered_sum(partial_ptr, stride_ps, stride_pb, stride_pm, splits, rows, units, mask, 0, carry)
    tl.store(dh0_ptr + _offsets_2d(rows, units, stride_0b, stride_0h), dh0.to(dh0_ptr.dtype.element_ty), mask=mask)
    if CELL == 2:
        dc = tl.load(dc_ptr + _offsets_2d(rows, units, stride_dcb, stride_dch), mask=mask, other=0.0)
        tl.store(dc0_ptr + _offsets_2d(rows, units, stride_c0b, stride_c0h), dc.to(dc0_ptr.dtype.element_ty),
                 mask=mask)


# ----------------------------------------------------------------------------------------------
# Kernels, per step: one launch per phase (the interpreter, and grids that do not fit the GPU)
# ----------------------------------------------------------------------------------------------


@triton.jit
def recurrence_product_kernel(
    w_ptr, v_ptr, partial_ptr,  # W (M, K) by strides; v (B, K), this step's row; partials (S, B, M)
    M, K, B,
    stride_wm, stride_wk, stride_vb, stride_vk, stride_ps, stride_pb, stride_pm,
    M_TILES, SPLITS,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    # Phase 1 of one step, forward (v = h_{t-1}, W = W_hh) or backward (v = dA_h,t, W = W_hh^T).
    m_tile, split, b_tile = _program_tiles(tl.program_id(0), M_TILES, SPLITS)
    w = _load_weight_slice(w_ptr, stride_wm, stride_wk, M, K, m_tile, split, BLOCK_M, BLOCK_K)
    _partial_product(w, v_ptr, stride_vb, stride_vk, partial_ptr + split * stride_ps, stride_pb, stride_pm, M, K, B,
                     m_tile, split, b_tile, BLOCK_M, BLOCK_K, BLOCK_B, ACC_DTYPE, INPUT_PRECISION, UPCAST_OPERANDS)


@triton.jit
def recurrence_forward_update_kernel(
    partial_ptr, xproj_ptr, b_hn_ptr, hidden_ptr, cells_ptr, gates_ptr, h_n_ptr, c_n_ptr, lengths_ptr,
    splits, step, T, H, B,
    stride_ps, stride_pb, stride_pm, stride_xt, stride_xb, stride_xg, stride_bhn,
    stride_ht, stride_hb, stride_hh, stride_ct, stride_cb, stride_ch, stride_gt, stride_gb, stride_gg,
    stride_nb, stride_nh, stride_cnb, stride_cnh,
    U_TILES,
    REVERSE: tl.constexpr, CELL: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # Phase 2 of one forward step; program -> (unit tile, batch tile).
    pid = tl.program_id(0)
    _forward_update(partial_ptr, stride_ps, stride_pb, stride_pm, splits, xproj_ptr, stride_xt, stride_xb, stride_xg,
                    b_hn_ptr, stride_bhn, hidden_ptr, stride_ht, stride_hb, stride_hh,
                    cells_ptr, stride_ct, stride_cb, stride_ch, gates_ptr, stride_gt, stride_gb, stride_gg,
                    h_n_ptr, stride_nb, stride_nh, c_n_ptr, stride_cnb, stride_cnh,
                    lengths_ptr, step, T, H, B, pid % U_TILES, pid // U_TILES,
                    REVERSE, CELL, HAS_BIAS, HAS_LENGTHS, BLOCK_B, BLOCK_U, ACC_DTYPE)


@triton.jit
def recurrence_backward_update_kernel(
    partial_ptr, d_output_ptr, carry_ptr, dc_ptr, hidden_ptr, cells_ptr, gates_ptr, da_x_ptr, da_h_ptr, lengths_ptr,
    splits, step, T, H, B,
    stride_ps, stride_pb, stride_pm, stride_dyt, stride_dyb, stride_dyh, stride_rb, stride_rh,
    stride_dcb, stride_dch, stride_ht, stride_hb, stride_hh, stride_ct, stride_cb, stride_ch,
    stride_gt, stride_gb, stride_gg, stride_axt, stride_axb, stride_axg, stride_aht, stride_ahb, stride_ahg,
    U_TILES,
    REVERSE: tl.constexpr, CELL: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # Phase 2 of one BPTT step; program -> (unit tile, batch tile).
    pid = tl.program_id(0)
    _backward_update(partial_ptr, stride_ps, stride_pb, stride_pm, splits,
                     d_output_ptr, stride_dyt, stride_dyb, stride_dyh,
                     carry_ptr, stride_rb, stride_rh, dc_ptr, stride_dcb, stride_dch,
                     hidden_ptr, stride_ht, stride_hb, stride_hh, cells_ptr, stride_ct, stride_cb, stride_ch,
                     gates_ptr, stride_gt, stride_gb, stride_gg, da_x_ptr, stride_axt, stride_axb, stride_axg,
                     da_h_ptr, stride_aht, stride_ahb, stride_ahg,
                     lengths_ptr, step, T, H, B, pid % U_TILES, pid // U_TILES,
                     REVERSE, CELL, HAS_LENGTHS, BLOCK_B, BLOCK_U, ACC_DTYPE)


@triton.jit
def recurrence_backward_finish_kernel(
    partial_ptr, carry_ptr, dc_ptr, dh0_ptr, dc0_ptr,
    splits, H, B,
    stride_ps, stride_pb, stride_pm, stride_rb, stride_rh, stride_dcb, stride_dch,
    stride_0b, stride_0h, stride_c0b, stride_c0h,
    U_TILES,
    CELL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
):
    pid = tl.program_id(0)
    _backward_finish(partial_ptr, stride_ps, stride_pb, stride_pm, splits, carry_ptr, stride_rb, stride_rh,
                     dc_ptr, stride_dcb, stride_dch, dh0_ptr, stride_0b, stride_0h, dc0_ptr, stride_c0b, stride_c0h,
                     H, B, pid % U_TILES, pid // U_TILES, CELL, BLOCK_B, BLOCK_U)


# ----------------------------------------------------------------------------------------------
# Kernels, persistent: one launch for all T steps, a grid barrier between phases
# ----------------------------------------------------------------------------------------------


@triton.jit
def recurrence_forward_persistent_kernel(
    w_ptr, partial_ptr, xproj_ptr, b_hn_ptr, hidden_ptr, cells_ptr, gates_ptr, h_n_ptr, c_n_ptr, lengths_ptr,
    sync_ptr,  # one int32, zero at launch: the grid barrier's arrival counter
    M, K, T, H, B,
    stride_wm, stride_wk, stride_ps, stride_pb, stride_pm, stride_xt, stride_xb, stride_xg, stride_bhn,
    stride_ht, stride_hb, stride_hh, stride_ct, stride_cb, stride_ch, stride_gt, stride_gb, stride_gg,
    stride_nb, stride_nh, stride_cnb, stride_cnh,
    M_TILES, SPLITS, U_TILES, UPDATE_PROGRAMS,
    REVERSE: tl.constexpr, CELL: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    m_tile, split, b_tile = _program_tiles(pid, M_TILES, SPLITS)
    # This program's slice of W_hh, on chip for the whole sequence.
    w = _load_weight_slice(w_ptr, stride_wm, stride_wk, M, K, m_tile, split, BLOCK_M, BLOCK_K)
    for step in range(0, T):
        t = _step_position(step, T, REVERSE)
        h_prev = hidden_ptr + _previous_row(t, REVERSE).to(tl.int64) * stride_ht
        _partial_product(w, h_prev, stride_hb, stride_hh, partial_ptr + split * stride_ps, stride_pb, stride_pm,
                         M, K, B, m_tile, split, b_tile,
                         BLOCK_M, BLOCK_K, BLOCK_B, ACC_DTYPE, INPUT_PRECISION, UPCAST_OPERANDS)
        _grid_barrier(sync_ptr, 2 * step + 1, programs)
        if pid < UPDATE_PROGRAMS:
            _forward_update(partial_ptr, stride_ps, stride_pb, stride_pm, SPLITS,
                            xproj_ptr, stride_xt, stride_xb, stride_xg, b_hn_ptr, stride_bhn,
                            hidden_ptr, stride_ht, stride_hb, stride_hh, cells_ptr, stride_ct, stride_cb, stride_ch,
                            gates_ptr, stride_gt, stride_gb, stride_gg,
                            h_n_ptr, stride_nb, stride_nh, c_n_ptr, stride_cnb, stride_cnh,
                            lengths_ptr, step, T, H, B, pid % U_TILES, pid // U_TILES,
                            REVERSE, CELL, HAS_BIAS, HAS_LENGTHS, BLOCK_B, BLOCK_U, ACC_DTYPE)
        # h_t is complete, and every program is done with the partials, before step t + 1.
        _grid_barrier(sync_ptr, 2 * step + 2, programs)


@triton.jit
def recurrence_backward_persistent_kernel(
    w_ptr, partial_ptr, d_output_ptr, carry_ptr, dc_ptr, hidden_ptr, cells_ptr, gates_ptr, da_x_ptr, da_h_ptr,
    dh0_ptr, dc0_ptr, lengths_ptr,
    sync_ptr,  # one int32, zero at launch: the grid barrier's arrival counter
    M, K, T, H, B,
    stride_wm, stride_wk, stride_ps, stride_pb, stride_pm, stride_dyt, stride_dyb, stride_dyh,
    stride_rb, stride_rh, stride_dcb, stride_dch, stride_ht, stride_hb, stride_hh, stride_ct, stride_cb, stride_ch,
    stride_gt, stride_gb, stride_gg, stride_axt, stride_axb, stride_axg, stride_aht, stride_ahb, stride_ahg,
    stride_0b, stride_0h, stride_c0b, stride_c0h,
    M_TILES, SPLITS, U_TILES, UPDATE_PROGRAMS,
    REVERSE: tl.constexpr, CELL: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    m_tile, split, b_tile = _program_tiles(pid, M_TILES, SPLITS)
    # This program's slice of W_hh^T (rows: units of h_{t-1}; columns: gate rows), on chip throughout.
    w = _load_weight_slice(w_ptr, stride_wm, stride_wk, M, K, m_tile, split, BLOCK_M, BLOCK_K)
    splits_in = SPLITS * 0  # the first BPTT step has no partial products from a later step
    for step in range(0, T):
        t = _step_position(step, T, not REVERSE)
        if pid < UPDATE_PROGRAMS:
            _backward_update(partial_ptr, stride_ps, stride_pb, stride_pm, splits_in,
                             d_output_ptr, stride_dyt, stride_dyb, stride_dyh,
                             carry_ptr, stride_rb, stride_rh, dc_ptr, stride_dcb, stride_dch,
                             hidden_ptr, stride_ht, stride_hb, stride_hh, cells_ptr, stride_ct, stride_cb, stride_ch,
                             gates_ptr, stride_gt, stride_gb, stride_gg, da_x_ptr, stride_axt, stride_axb, stride_axg,
                             da_h_ptr, stride_aht, stride_ahb, stride_ahg,
                             lengths_ptr, step, T, H, B, pid % U_TILES, pid // U_TILES,
                             REVERSE, CELL, HAS_LENGTHS, BLOCK_B, BLOCK_U, ACC_DTYPE)
        _grid_barrier(sync_ptr, 2 * step + 1, programs)
        da_h = da_h_ptr + t.to(tl.int64) * stride_aht
        _partial_product(w, da_h, stride_ahb, stride_ahg, partial_ptr + split * stride_ps, stride_pb, stride_pm,
                         M, K, B, m_tile, split, b_tile,
                         BLOCK_M, BLOCK_K, BLOCK_B, ACC_DTYPE, INPUT_PRECISION, UPCAST_OPERANDS)
        _grid_barrier(sync_ptr, 2 * step + 2, programs)
        splits_in = SPLITS
    if pid < UPDATE_PROGRAMS:
        _backward_finish(partial_ptr, stride_ps, stride_pb, stride_pm, SPLITS, carry_ptr, stride_rb, stride_rh,
                         dc_ptr, stride_dcb, stride_dch, dh0_ptr, stride_0b, stride_0h, dc0_ptr, stride_c0b, stride_c0h,
                         H, B, pid % U_TILES, pid // U_TILES, CELL, BLOCK_B, BLOCK_U)


# ----------------------------------------------------------------------------------------------
# Planning: tiles, splits, and which way the steps run
# ----------------------------------------------------------------------------------------------


class Plan(NamedTuple):
    """How one direction's recurrence is tiled. Phase 1 multiplies W (M, K) by the state; its grid
    is M_TILES x SPLITS x B_TILES programs. Phase 2 covers (H units, B rows) in U_TILES x B_TILES
    tiles of (BLOCK_B, BLOCK_U), never more tiles than phase 1 has programs."""
    M: int
    K: int
    M_TILES: int
    SPLITS: int
    B_TILES: int
    U_TILES: int
    BLOCK_M: int
    BLOCK_K: int
    BLOCK_B: int
    BLOCK_U: int

    @property
    def programs(self) -> int:
        return self.M_TILES * self.SPLITS * self.B_TILES

    @property
    def update_programs(self) -> int:
        return self.U_TILES * self.B_TILES


def plan(cell: int, dtype: torch.dtype, H: int, B: int, backward: bool, target_programs: int | None = None,
         max_block_k: int | None = None) -> Plan:
    """The tiling of one direction: forward, W_hh has M = G*H rows and K = H columns; backward,
    W_hh^T has M = H and K = G*H. K is split in slices of at most `max_block_k` (the on-chip
    budget by dtype), then halved (down to 16), then the batch tile halved (down to 16), until
    the grid has `target_programs` (unless given: TARGET_PROGRAMS, or INTERPRETED_TARGET_PROGRAMS
    when kernels run interpreted rather than captured for the sm_90 report, whose batch tiles
    may also be wider)."""
    interpreted = interpreted_run()
    if target_programs is None:
        target_programs = INTERPRETED_TARGET_PROGRAMS if interpreted else TARGET_PROGRAMS
    G = GATES[cell]
    M, K = (H, G * H) if backward else (G * H, H)
    block_b = min(INTERPRETED_MAX_BLOCK_B if interpreted else MAX_BLOCK_B, max(MIN_BLOCK, _next_pow2(B)))
    m_tiles = cdiv(M, BLOCK_M)
    block_k = min(max_block_k or MAX_BLOCK_K[dtype], max(MIN_BLOCK, _next_pow2(K)))
    while block_k > MIN_BLOCK and m_tiles * cdiv(K, block_k) * cdiv(B, block_b) < target_programs:
        block_k //= 2
    # Then narrower batch tiles, which reread the weight slice per tile but add no partial sums.
    while block_b > MIN_BLOCK and m_tiles * cdiv(K, block_k) * cdiv(B, block_b) < target_programs:
        block_b //= 2
    b_tiles = cdiv(B, block_b)
    splits = cdiv(K, block_k)
    block_u = _next_pow2(cdiv(H, m_tiles * splits))
    return Plan(M, K, m_tiles, splits, b_tiles, cdiv(H, block_u), BLOCK_M, block_k, block_b, block_u)


# (kernel name, its constexprs, programs, device) -> True where the grid fits on the GPU at once.
_FITS: dict = {}
# What each recurrence launch chose, by "cell dtype T x B x H direction", for `tritonprop info`.
PATHS: dict[str, str] = {}
PERSISTENT, PER_STEP = "persistent", "per-step"


def _record(cell, x, H, backward, path, why):
    """Note the path a launch took (for `describe`); a fall back to per-step launches on a GPU warns,
    once per shape."""
    key = f"{cell} {str(x.dtype).removeprefix('torch.')} T={x.shape[0]} B={x.shape[1]} H={H} " \
          f"{'BPTT' if backward else 'forward'}"
    if path == PER_STEP and key not in PATHS and x.device.type == "cuda" and not backend.interpreting():
        warnings.warn(f"tritonprop recurrence: {key} runs one launch per phase per step, not persistent: {why}",
                      RuntimeWarning, stacklevel=3)
    PATHS[key] = f"{path} ({why})"


def describe() -> dict:
    """How the recurrence runs in this process, for `tritonprop info`: the rule, and the path each
    shape met so far took."""
    if backend.interpreting() or not torch.cuda.is_available():
        rule = (f"{PER_STEP}: one launch per phase per step (the interpreter runs a grid's programs one after "
                "another, so a grid barrier would never open)")
    else:
        rule = (f"{PERSISTENT} where a layer's grid fits the GPU at the kernel's occupancy (one cooperative launch "
                f"for all T steps, a grid barrier between phases); otherwise {PER_STEP}, with a RuntimeWarning")
    return {"rule": rule, "launches": dict(PATHS)}


def _persistent_fits(kernel, grid_programs, args, kwargs, device) -> tuple[bool, str]:
    """Whether every program of the persistent launch can be resident at once, and why."""
    if capturing():
        # The static report compiles the launch for sm_90 and checks that the grid is co-resident
        # at the occupancy it reads; here, with nothing compiled, the widest tiles' is assumed.
        fits = grid_programs <= CAPTURED_CTAS_PER_SM * streaming_multiprocessors(device)
        return fits, f"{grid_programs} programs, captured for {streaming_multiprocessors(device)} SMs"
    if backend.interpreting() or device.type != "cuda":
        return False, "the interpreter runs programs one after another: a grid barrier would never open"
    key = (kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__,
           tuple(sorted((k, v) for k, v in kwargs.items() if isinstance(v, (int, str, bool)))), grid_programs,
           device.index)
    if key not in _FITS:
        compiled = kernel.warmup(*args, grid=(grid_programs,), **kwargs)
        resident = ctas_per_sm(compiled.n_regs, compiled.metadata.shared, compiled.metadata.num_warps)
        _FITS[key] = (grid_programs <= resident * streaming_multiprocessors(device), resident)
    fits, resident = _FITS[key]
    return fits, f"{grid_programs} programs, {resident} per SM on {streaming_multiprocessors(device)} SMs"


def _choose_path(path, kernel, p: Plan, args, kwargs, device) -> tuple[str, str]:
    if allocating_only() and path is None and not capturing():
        # Fake tensors (torch.compile's tracing, opcheck): nothing runs, so nothing is compiled to
        # ask; on a GPU the persistent kernel is the launch that would most likely follow. (A
        # capture also runs on fake tensors, but records the launches the sm_90 report judges.)
        compiled = device.type == "cuda" and not backend.interpreting()
        return (PERSISTENT if compiled else PER_STEP), "allocations only: no kernel runs"
    if path == PERSISTENT:
        if (backend.interpreting() or device.type != "cuda") and p.programs != 1 and not capturing():
            raise ValueError(f"recurrence: the persistent kernel needs all {p.programs} programs resident at "
                             "once; under the interpreter it runs only with a one-program plan")
        return PERSISTENT, "asked for"
    if path == PER_STEP:
        return PER_STEP, "asked for"
    if path is not None:
        raise ValueError(f"recurrence: path must be {PERSISTENT!r}, {PER_STEP!r} or None, got {path!r}")
    fits, why = _persistent_fits(kernel, p.programs, args, kwargs, device)
    return (PERSISTENT if fits else PER_STEP), why


def _product_options(p: Plan, x: torch.Tensor) -> dict:
    """The phase-1 product's tiles, dot options and warps: once per launch function, since the
    per-step path launches the product at every step."""
    return dict(BLOCK_M=p.BLOCK_M, BLOCK_K=p.BLOCK_K, BLOCK_B=p.BLOCK_B, ACC_DTYPE=accumulator_dtype(x.dtype),
                **dot_options(x.dtype, _allow_tf32(TF32_FLAG)), num_warps=NUM_WARPS)


def _cooperative(device: torch.device) -> dict:
    # A cooperative launch fails outright, rather than hanging, if the grid cannot be co-resident.
    compiled = capturing() or (device.type == "cuda" and not backend.interpreting())
    return dict(launch_cooperative_grid=True) if compiled else {}


def _ran_persistent(kernel, args, step_options, product_options, p: Plan, cell, x, H, backward, path) -> bool:
    """Launch the persistent `kernel` for all T steps, if that is the path for this grid (see
    `_choose_path`), and say whether it ran; if not, the caller launches the steps one by one."""
    options = dict(step_options, **product_options, **_cooperative(x.device))
    chosen, why = _choose_path(path, kernel, p, args, options, x.device)
    if not allocating_only():
        _record(cell, x, H, backward, chosen, why)
    if chosen != PERSISTENT:
        return False
    launch(kernel, (p.programs,))(*args, **options)
    return True


# ----------------------------------------------------------------------------------------------
# Launch functions: one layer, one or two directions
# ----------------------------------------------------------------------------------------------


def _flat_steps(x: torch.Tensor) -> torch.Tensor:
    """A time-major (T, B, F) tensor as the (T*B, F) rows of one matmul, without a copy."""
    T, B, F = x.shape
    try:
        return x.view(T * B, F)
    except RuntimeError:
        raise ValueError(f"recurrence kernels: x of shape {tuple(x.shape)} and strides {x.stride()} does not "
                         "flatten to (T*B, F) rows; pass a time-major tensor") from None


def _projection_bias(cell, b_ih, b_hh, H, acc_dtype):
    """The bias added once in the input projection's epilogue: b_ih + b_hh, except the GRU's b_hn,
    which stays inside the reset product. Summed in the accumulator dtype, so that 16-bit biases
    are rounded once, not twice."""
    if b_ih is None:
        return None
    bias = b_ih.to(acc_dtype) + b_hh.to(acc_dtype)
    if cell == GRU:
        bias[2 * H:] = b_ih[2 * H:].to(acc_dtype)
    return bias


def _saved_buffers(cell, T, B, D, H, x):
    acc = accumulator_torch_dtype(x.dtype)
    cells = torch.empty((T + D, B, D * H) if cell == LSTM else (0,), device=x.device, dtype=acc)
    gates = torch.empty((T, B, D * SAVED_GATES[cell] * H), device=x.device, dtype=acc)
    return cells, gates


def _initial_state(buffer, state, T, H):
    """Write h0 (or c0) into its rows of a (T + D, B, D*H) buffer, and zero the two corners no
    direction uses (row 0 of the reverse columns, row T + 1 of the forward ones), so that the
    whole buffer, an op output, is defined."""
    buffer[0, :, :H].copy_(state[0])
    if state.shape[0] == 2:
        buffer[T + 1, :, H:].copy_(state[1])
        buffer[0, :, H:].zero_()
        buffer[T + 1, :, :H].zero_()


def forward(cell: str, x, h0, c0, weights, lengths=None, *, path=None, tiles=None):
    """One layer over a whole sequence.

    cell: "rnn_tanh", "rnn_relu", "lstm" or "gru". x: (T, B, I), time-major, so that its (t, b)
    rows flatten without a copy; h0, and c0 for the LSTM (else None): (D, B, H); weights: one
    ``(w_ih, w_hh, b_ih, b_hh)`` per direction (D = 1 or 2; biases may be None); lengths: optional
    int32 (B,) on x's device. `path` forces "persistent" or "per-step" and `tiles` a `plan`
    keyword dict (tests). Returns ``(hidden, h_n, c_n, cells, gates)``, the buffers of the module
    docstring; the output (T, B, D*H) is hidden[1:T + 1]; c_n and cells are empty but for the LSTM.
    """
    kind = CELLS[cell]
    T, B, _ = x.shape
    D = len(weights)
    H = weights[0][1].shape[1]
    hidden = torch.empty((T + D, B, D * H), device=x.device, dtype=x.dtype)
    h_n = torch.empty((D, B, H), device=x.device, dtype=x.dtype)
    c_n = torch.empty((D, B, H) if kind == LSTM else (0,), device=x.device, dtype=x.dtype)
    cells, gates = _saved_buffers(kind, T, B, D, H, x)
    _initial_state(hidden, h0, T, H)
    if kind == LSTM:
        _initial_state(cells, c0, T, H)
    if B == 0 or H == 0:
        return hidden, h_n, c_n, cells, gates
    acc = accumulator_torch_dtype(x.dtype)
    x2d = _flat_steps(x)
    p = plan(kind, x.dtype, H, B, backward=False, **(tiles or {}))
    product_options = _product_options(p, x)
    partials = torch.empty((p.SPLITS, B, p.M), device=x.device, dtype=acc)
    saved_width = SAVED_GATES[kind] * H
    for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        xproj = linear.forward(x2d, w_ih, _projection_bias(kind, b_ih, b_hh, H, acc))[0].view(T, B, p.M)
        has_bias = b_hh is not None
        b_hn = b_hh[2 * H:] if has_bias and kind == GRU else h_n
        column = hidden[:, :, d * H:(d + 1) * H]
        cells_d = cells[:, :, d * H:(d + 1) * H] if kind == LSTM else cells.view(1, 1, 0)
        gates_d = gates[:, :, d * saved_width:(d + 1) * saved_width]
        c_n_d = c_n[d] if kind == LSTM else h_n[d]
        lengths_arg = lengths if lengths is not None else h_n
        update_strides = (*partials.stride(), *xproj.stride(), b_hn.stride(0) if b_hn.dim() else 0,
                          *column.stride(), *cells_d.stride(), *gates_d.stride(), *h_n[d].stride(), *c_n_d.stride())
        options = dict(REVERSE=d == 1, CELL=kind, HAS_BIAS=has_bias, HAS_LENGTHS=lengths is not None,
                       BLOCK_B=p.BLOCK_B, BLOCK_U=p.BLOCK_U, ACC_DTYPE=accumulator_dtype(x.dtype))
        persistent_args = (w_hh, partials, xproj, b_hn, column, cells_d, gates_d, h_n[d], c_n_d, lengths_arg,
                           torch.zeros(1, device=x.device, dtype=torch.int32), p.M, p.K, T, H, B,
                           *w_hh.stride(), *update_strides, p.M_TILES, p.SPLITS, p.U_TILES, p.update_programs)
        if _ran_persistent(recurrence_forward_persistent_kernel, persistent_args, options, product_options, p, cell, x,
                           H, False, path):
            continue
        for step in range(T):
            t = T - 1 - step if d == 1 else step
            h_prev = column[t + 2 if d == 1 else t]
            launch(recurrence_product_kernel, (p.programs,))(
                w_hh, h_prev, partials, p.M, p.K, B, *w_hh.stride(), *h_prev.stride(), *partials.stride(),
                p.M_TILES, p.SPLITS, **product_options)
            launch(recurrence_forward_update_kernel, (p.update_programs,))(
                partials, xproj, b_hn, column, cells_d, gates_d, h_n[d], c_n_d, lengths_arg, p.SPLITS, step, T, H, B,
                *update_strides, p.U_TILES, **options, num_warps=NUM_WARPS)
    return hidden, h_n, c_n, cells, gates


def backward(cell: str, d_output, dh_n, dc_n, x, hidden, cells, gates, weights, lengths=None, need_x=True,
             need_h0=True, need_weights=True, *, path=None, tiles=None):
    """Gradients of one layer (BPTT) from d_output (T, B, D*H), dh_n and, for the LSTM, dc_n (D, B, H).

    Returns ``(dx, dh0, dc0, grads)``, with ``grads`` one ``(dw_ih, dw_hh, db_ih, db_hh)`` per
    direction (biases None when the layer has none); dx, dh0 and grads are None when not needed,
    dc0 None but for the LSTM.
    """
    kind = CELLS[cell]
    T, B, I = x.shape
    D = len(weights)
    H = weights[0][1].shape[1]
    GH = GATES[kind] * H
    has_bias = weights[0][2] is not None
    acc = accumulator_torch_dtype(x.dtype)
    x2d = _flat_steps(x)
    da_x = torch.empty((T, B, D * GH), device=x.device, dtype=x.dtype)
    # dA_h differs from dA_x only for the GRU (its n gate's recurrent side is scaled by r).
    da_h = torch.empty_like(da_x) if kind == GRU else da_x
    dh0 = torch.empty((D, B, H), device=x.device, dtype=x.dtype)
    dc0 = torch.empty((D, B, H), device=x.device, dtype=x.dtype) if kind == LSTM else None
    if B == 0 or H == 0:
        da_x.zero_()
        da_h.zero_()
        dh0.zero_()
        if dc0 is not None:
            dc0.zero_()
    else:
        p = plan(kind, x.dtype, H, B, backward=True, **(tiles or {}))
        product_options = _product_options(p, x)
        partials = torch.empty((p.SPLITS, B, p.M), device=x.device, dtype=acc)
        carry = dh_n.to(acc, copy=True)
        dc = dc_n.to(acc, copy=True) if kind == LSTM else carry
        saved_width = SAVED_GATES[kind] * H
        for d, (_, w_hh, _, _) in enumerate(weights):
            column = hidden[:, :, d * H:(d + 1) * H]
            cells_d = cells[:, :, d * H:(d + 1) * H] if kind == LSTM else cells.view(1, 1, 0)
            gates_d = gates[:, :, d * saved_width:(d + 1) * saved_width]
            dy = d_output[:, :, d * H:(d + 1) * H]
            da_x_d = da_x[:, :, d * GH:(d + 1) * GH]
            da_h_d = da_h[:, :, d * GH:(d + 1) * GH]
            dc0_d = dc0[d] if kind == LSTM else dh0[d]
            lengths_arg = lengths if lengths is not None else dh0
            # W_hh^T: rows are the units of h_{t-1}, columns the gate rows; W_hh read with its strides swapped.
            w_t_strides = (w_hh.stride(1), w_hh.stride(0))
            update_strides = (*partials.stride(), *dy.stride(), *carry[d].stride(), *dc[d].stride(), *column.stride(),
                              *cells_d.stride(), *gates_d.stride(), *da_x_d.stride(), *da_h_d.stride())
            finish_strides = (*partials.stride(), *carry[d].stride(), *dc[d].stride(), *dh0[d].stride(),
                              *dc0_d.stride())
            options = dict(REVERSE=d == 1, CELL=kind, HAS_LENGTHS=lengths is not None, BLOCK_B=p.BLOCK_B,
                           BLOCK_U=p.BLOCK_U, ACC_DTYPE=accumulator_dtype(x.dtype))
            persistent_args = (w_hh, partials, dy, carry[d], dc[d], column, cells_d, gates_d, da_x_d, da_h_d, dh0[d],
                               dc0_d, lengths_arg, torch.zeros(1, device=x.device, dtype=torch.int32),
                               p.M, p.K, T, H, B, *w_t_strides, *update_strides,
                               *dh0[d].stride(), *dc0_d.stride(), p.M_TILES, p.SPLITS, p.U_TILES, p.update_programs)
            if _ran_persistent(recurrence_backward_persistent_kernel, persistent_args, options, product_options, p, cell,
                               x, H, True, path):
                continue
            for step in range(T):
                t = step if d == 1 else T - 1 - step
                launch(recurrence_backward_update_kernel, (p.update_programs,))(
                    partials, dy, carry[d], dc[d], column, cells_d, gates_d, da_x_d, da_h_d, lengths_arg,
                    p.SPLITS if step else 0, step, T, H, B, *update_strides, p.U_TILES, **options,
                    num_warps=NUM_WARPS)
                launch(recurrence_product_kernel, (p.programs,))(
                    w_hh, da_h_d[t], partials, p.M, p.K, B, *w_t_strides, *da_h_d[t].stride(), *partials.stride(),
                    p.M_TILES, p.SPLITS, **product_options)
            launch(recurrence_backward_finish_kernel, (p.update_programs,))(
                partials, carry[d], dc[d], dh0[d], dc0_d, p.SPLITS, H, B, *finish_strides, p.U_TILES,
                CELL=kind, BLOCK_B=p.BLOCK_B, BLOCK_U=p.BLOCK_U, num_warps=NUM_WARPS)

    dx = grads = None
    da_x2d = da_x.view(T * B, D * GH)
    if need_x:
        # Both directions read the same x: dX = [dA_fwd dA_rev] [W_ih_fwd; W_ih_rev], one matmul.
        w_ih = weights[0][0] if D == 1 else torch.cat([w[0] for w in weights])
        dx = linear.backward_input(da_x2d, w_ih).view(T, B, I)
    if need_weights:
        dw_ih, db_ih = linear.backward_weight(da_x2d, x2d, need_bias=has_bias)
        da_h2d = da_h.view(T * B, D * GH)
        grads = []
        for d in range(D):
            # The state step t consumed: row t of `hidden` forward (h0 first), row t + 2 reverse.
            first = 0 if d == 0 else 2
            h_prev = hidden[first:first + T, :, d * H:(d + 1) * H]
            dw_hh, db_hh = linear.backward_weight(da_h2d[:, d * GH:(d + 1) * GH], h_prev.view(T * B, H),
                                                  need_bias=has_bias and kind == GRU)
            db_d = db_ih[d * GH:(d + 1) * GH] if has_bias else None
            if has_bias and kind != GRU:
                # b_ih and b_hh enter the gates as one sum, so they share one gradient; each gets its own tensor.
                db_hh = db_d.clone()
            grads.append((dw_ih[d * GH:(d + 1) * GH], dw_hh, db_d, db_hh))
    return dx, dh0 if need_h0 else None, dc0, grads
