"""Linear layer kernels: one strided matmul with a fused epilogue, used for all three products.

Notation: input x (M, K) once its leading dims are flattened, weight w (N, K), bias b (N,),
output y (M, N):

    z = x @ w^T + b,    y = act(z)        act in {identity, ReLU, GELU, tanh-GELU}

`matmul_kernel` computes C = A @ B for an A (rows, inner) and a B (inner, cols) given by their
strides. A transposed operand is the same tensor with its two strides swapped (`t.t()` is a
view), so no transpose is ever materialised:

  forward   y  = act(x @ w^T + b)   A = x,     B = w^T   bias + activation in the epilogue
  dgrad     dx = dz @ w             A = dz,    B = w
  wgrad     dw = dz^T @ x           A = dz^T,  B = x     sums over all M rows: split-K, with
                                                         partials summed in a fixed order by
                                                         kernels/reduction.py; the same pass
                                                         sums the rows of A = dz^T, which is
                                                         db[n] = sum_m dz[m, n]

The epilogue's activation codes and helpers are the shared ones of kernels/activations.py, and
`activation_backward` (the shared elementwise kernel of kernels/elementwise.py) turns the
upstream gradient dy into dz = dy * act'(z) before dgrad and wgrad.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels import elementwise
from tritonprop.kernels._common import (_allow_tf32, _block, accumulator_dtype, accumulator_torch_dtype,
                                        dot_accumulate, dot_options, launch, parallel_programs)
from tritonprop.kernels.activations import ACTIVATIONS, SAVES_PREACTIVATION, apply_activation
from tritonprop.kernels.reduction import sum_partials

# float32 dots follow torch's flag for float32 matmuls (cuBLAS), the one F.linear follows.
TF32_FLAG = "matmul"

# Largest tile (BLOCK_M, BLOCK_N, BLOCK_K), num_warps and num_stages per operand dtype; smaller
# problems get the smallest power-of-two tile that covers them. 16-bit operands use the first
# config of Triton's matmul tutorial for Hopper (48 KB of operands per stage, three stages);
# wider elements take smaller tiles, so that the stages still fit in shared memory and the fp64
# accumulator in registers.
GEMM_TILES = {
    torch.float16: (128, 256, 64, 8, 3),
    torch.bfloat16: (128, 256, 64, 8, 3),
    torch.float32: (128, 128, 32, 8, 3),
    torch.float64: (64, 64, 32, 4, 2),
}
GROUP_M = 8


# ----------------------------------------------------------------------------------------------
# The matmul, with the bias + activation epilogue and the row sums that give db
# ----------------------------------------------------------------------------------------------


@triton.jit
def matmul_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, z_ptr, row_sums_ptr,
    M, N, K, k_per_split,
    stride_am, stride_ak, stride_bk, stride_bn,
    stride_cs, stride_cm, stride_cn, stride_bias, stride_rs,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, STORE_PREACTIVATION: tl.constexpr,
    ROW_SUMS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
):
    # C[split] = A[:, slice] @ B[slice, :] over this split's slice of the inner dim. Axis 1 is
    # the split; with one split C is the output itself and the epilogue applies.
    pid = tl.program_id(0)
    split = tl.program_id(1)

    # Tiles run in groups of GROUP_M tile rows, column by column: programs that run together
    # share B's column tiles and a few of A's row tiles, so both stay in L2 (Triton's matmul
    # tutorial). A product with no columns still runs one column of programs, for the row sums.
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.maximum(tl.cdiv(N, BLOCK_N), 1)
    programs_per_group = GROUP_M * num_pid_n
    first_pid_m = (pid // programs_per_group) * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % programs_per_group) % group_rows
    pid_n = (pid % programs_per_group) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    # int64: an operand may hold more than 2**31 elements even when each index fits in int32.
    a_rows = a_ptr + rows.to(tl.int64)[:, None] * stride_am
    b_cols = b_ptr + cols.to(tl.int64)[None, :] * stride_bn
    k_offsets = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    row_sum = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    k_first = split * k_per_split
    k_end = tl.minimum(k_first + k_per_split, K)
    for k_start in range(k_first, k_end, BLOCK_K):
        k = k_start + k_offsets
        k_ok = k < k_end
        a = tl.load(a_rows + k.to(tl.int64)[None, :] * stride_ak, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_cols + k.to(tl.int64)[:, None] * stride_bk, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = dot_accumulate(a, b, acc, INPUT_PRECISION, UPCAST_OPERANDS)
        if ROW_SUMS:
            row_sum += tl.sum(a.to(ACC_DTYPE), axis=1)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols.to(tl.int64) * stride_bias, mask=col_ok, other=0.0).to(ACC_DTYPE)[None, :]
    out = apply_activation(acc, ACTIVATION)

    c_offsets = split.to(tl.int64) * stride_cs + rows.to(tl.int64)[:, None] * stride_cm \
        + cols.to(tl.int64)[None, :] * stride_cn
    mask = row_ok[:, None] & col_ok[None, :]
    tl.store(c_ptr + c_offsets, out.to(c_ptr.dtype.element_ty), mask=mask)
    if STORE_PREACTIVATION:
        # z is laid out exactly like C.
        tl.store(z_ptr + c_offsets, acc.to(z_ptr.dtype.element_ty), mask=mask)
    if ROW_SUMS:
        # Every column of programs read the same rows of A; the first one writes their sums.
        if pid_n == 0:
            tl.store(row_sums_ptr + split.to(tl.int64) * stride_rs + rows,
                     row_sum.to(row_sums_ptr.dtype.element_ty), mask=row_ok)


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def _tiles(dtype: torch.dtype, rows: int, cols: int, inner: int) -> dict:
    block_m, block_n, block_k, num_warps, num_stages = GEMM_TILES[dtype]
    tiles = dict(BLOCK_M=_block(rows, 16, block_m), BLOCK_N=_block(cols, 16, block_n),
                 BLOCK_K=_block(inner, 16, block_k))
    # A tile clamped to a small problem has too little work for the full complement of warps.
    if tiles["BLOCK_M"] * tiles["BLOCK_N"] < block_m * block_n:
        num_warps = 4
    return dict(tiles, num_warps=num_warps, num_stages=num_stages)


def _matmul(a, b, c, *, k_per_split, bias=None, activation=None, z=None, row_sums=None):
    """c[s] = act(a[:, s-th slice] @ b[s-th slice, :] + bias) for 2-D `a` and `b` of any strides.

    `c` is (splits, rows, cols) and `row_sums` (splits, rows); slice s of the inner dim is
    [s * k_per_split, (s + 1) * k_per_split). With one split these are views of the outputs
    themselves and bias, activation and z (the pre-activation, stored like c) may be given.
    """
    rows, inner = a.shape
    cols = b.shape[1]
    num_splits = c.shape[0]
    config = _tiles(a.dtype, rows, cols, inner)
    # A product with no columns still runs one column of programs, for the row sums.
    programs = triton.cdiv(rows, config["BLOCK_M"]) * max(1, triton.cdiv(cols, config["BLOCK_N"]))
    launch(matmul_kernel, (programs, num_splits))(
        a, b, c, bias if bias is not None else c, z if z is not None else c,
        row_sums if row_sums is not None else c,
        rows, cols, inner, k_per_split,
        *a.stride(), *b.stride(), *c.stride(),
        bias.stride(0) if bias is not None else 0, row_sums.stride(0) if row_sums is not None else 0,
        HAS_BIAS=bias is not None, ACTIVATION=ACTIVATIONS[activation], STORE_PREACTIVATION=z is not None,
        ROW_SUMS=row_sums is not None, GROUP_M=GROUP_M, ACC_DTYPE=accumulator_dtype(a.dtype),
        **dot_options(a.dtype, _allow_tf32(TF32_FLAG)), **config,
    )


def forward(x, weight, bias=None, activation=None):
    """y = act(x @ weight^T + bias) for a 2-D x (M, K) and weight (N, K), both of any strides.

    Returns ``(y, saved)``: y is a new contiguous (M, N) tensor; `saved` is what
    `activation_backward` needs: y itself for ReLU, the pre-activation z for GELU, None without
    an activation.
    """
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    z = torch.empty_like(y) if activation in SAVES_PREACTIVATION else None
    saved = z if z is not None else (y if activation == "relu" else None)
    if M == 0 or N == 0:
        return y, saved
    # With K == 0 the kernel's loop is empty and y = act(bias), as in torch.
    _matmul(x, weight.t(), y.unsqueeze(0), k_per_split=K, bias=bias, activation=activation,
            z=None if z is None else z.unsqueeze(0))
    return y, saved


# activation_backward(dy, saved, activation): dz = dy * act'(z), the gradient of the pre-activation
# from the gradient of the output, with `saved` as `forward` returned it (a new contiguous tensor,
# so dz is contiguous too); dy may have any strides, even 0 where it was expanded from a sum. The
# one activation backward, shared with conv2d and the standalone activations.
activation_backward = elementwise.backward


def backward_input(dz, weight):
    """dx = dz @ weight: the gradient of the (M, K) input from that of the pre-activation."""
    M, N = dz.shape
    K = weight.shape[1]
    dx = torch.empty((M, K), device=dz.device, dtype=dz.dtype)
    if M == 0 or K == 0:
        return dx
    # With N == 0 the kernel's loop is empty and dx = 0.
    _matmul(dz, weight, dx.unsqueeze(0), k_per_split=N)
    return dx


def backward_weight(dz, x, need_weight=True, need_bias=True, splits=None):
    """(dw, db) = (dz^T @ x, the column sums of dz), deterministic: split-K in a fixed order.

    The reduction runs over all M rows, which is long when the output (N, K) is small, so it is
    cut into `splits` slices of rows (by default enough to fill the device), each written to a
    workspace, then summed in split order. With one slice the kernel writes dw and db directly.
    """
    M, N = dz.shape
    K = x.shape[1]
    dw = torch.empty((N, K), device=dz.device, dtype=x.dtype) if need_weight else None
    db = torch.empty(N, device=dz.device, dtype=dz.dtype) if need_bias else None
    if N == 0 or not (need_bias or (need_weight and K > 0)):
        return dw, db
    # Without dw the product runs on zero columns of x: only the row sums of dz^T, db, are made.
    b = x if need_weight else x[:, :0]
    a = dz.t()
    config = _tiles(dz.dtype, N, b.shape[1], M)
    if splits is None:
        tiles = triton.cdiv(N, config["BLOCK_M"]) * max(1, triton.cdiv(b.shape[1], config["BLOCK_N"]))
        splits = triton.cdiv(parallel_programs(dz.device), tiles)
    # Each slice gets a whole number of BLOCK_K rows; with M == 0 one empty slice writes zeros.
    block_k = config["BLOCK_K"]
    k_per_split = triton.cdiv(triton.cdiv(M, max(1, int(splits))), block_k) * block_k or block_k
    num_splits = max(1, triton.cdiv(M, k_per_split))

    if num_splits == 1:
        out = dw if need_weight else torch.empty((N, 0), device=dz.device, dtype=x.dtype)
        _matmul(a, b, out.unsqueeze(0), k_per_split=k_per_split, row_sums=None if db is None else db.unsqueeze(0))
        return dw, db

    acc_dtype = accumulator_torch_dtype(dz.dtype)
    part_dw = torch.empty((num_splits, N, b.shape[1]), device=dz.device, dtype=acc_dtype)
    part_db = torch.empty((num_splits, N), device=dz.device, dtype=acc_dtype) if need_bias else None
    _matmul(a, b, part_dw, k_per_split=k_per_split, row_sums=part_db)
    for part, out in ((part_dw, dw), (part_db, db)):
        if out is not None:
            sum_partials(part, out)
    return dw, db
