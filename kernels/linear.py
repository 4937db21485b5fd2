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
from tritonprop.kernels._common import (_allow_tf32, _block, accumulator_dtype, accumulator_torch_dtype, cdiv,
                                        dot_accumulate, dot_options, launch_tuned, parallel_programs,
                                        streaming_multiprocessors)
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
# Further configs the autotuner tries on the GPU beside a dtype's full tile (never under the
# interpreter): a squarer tile with one more stage, and the transposed tile. Each compiles without
# spills, on wgmma, at the benchmark shapes (bench/results/static-sm90.md). The fp32 ones tried
# (128 x 64 and 64 x 128) spilled at some benchmark shape, so fp32 keeps its one tile.
GEMM_ALTERNATIVES = {
    torch.float16: [(128, 128, 64, 8, 4), (256, 128, 64, 8, 3)],
    torch.bfloat16: [(128, 128, 64, 8, 4), (256, 128, 64, 8, 3)],
    torch.float32: [],
    torch.float64: [],
}


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
    c_tile = c_ptr + split.to(tl.int64) * stride_cs
    z_tile = z_ptr + split.to(tl.int64) * stride_cs
    if ACTIVATION != 0 and BLOCK_N >= 128:
        # The activation and the stores run on half the columns at a time: a 128x256 fp32
        # accumulator is already 128 registers per thread at 8 warps, and GELU's temporaries on
        # all of it at once spill (static sm_90 report). The halves are the tile's columns
        # [0, BLOCK_N/2) and [BLOCK_N/2, BLOCK_N): reshape puts the half index in the middle, the
        # permute moves it last, where tl.split takes it apart.
        left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
        half = pid_n * BLOCK_N + tl.arange(0, BLOCK_N // 2)
        _store_epilogue(left, rows, half, c_tile, z_tile, M, N, stride_cm, stride_cn, ACTIVATION, STORE_PREACTIVATION)
        _store_epilogue(right, rows, half + BLOCK_N // 2, c_tile, z_tile, M, N, stride_cm, stride_cn, ACTIVATION,
                        STORE_PREACTIVATION)
    else:
        _store_epilogue(acc, rows, cols, c_tile, z_tile, M, N, stride_cm, stride_cn, ACTIVATION, STORE_PREACTIVATION)
    if ROW_SUMS:
        # Every column of programs read the same rows of A; the first one writes their sums.
        if pid_n == 0:
            tl.store(row_sums_ptr + split.to(tl.int64) * stride_rs + rows,
                     row_sum.to(row_sums_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _store_epilogue(acc, rows, cols, c_tile, z_tile, M, N, stride_cm, stride_cn,
                    ACTIVATION: tl.constexpr, STORE_PREACTIVATION: tl.constexpr):
    """C[rows, cols] = act(acc), and Z[rows, cols] = acc (the pre-activation, laid out like C)."""
    offsets = rows.to(tl.int64)[:, None] * stride_cm + cols.to(tl.int64)[None, :] * stride_cn
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    tl.store(c_tile + offsets, apply_activation(acc, ACTIVATION).to(c_tile.dtype.element_ty), mask=mask)
    if STORE_PREACTIVATION:
        tl.store(z_tile + offsets, acc.to(z_tile.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def _tiles(dtype: torch.dtype, rows: int, cols: int, inner: int, programs: int = 1) -> dict:
    """The tile of a (rows x cols) product: the dtype's largest, clamped to the problem, then
    halved (columns first, down to 64 x 64) while it leaves fewer than `programs` tiles, so that a
    narrow product still spreads over the SMs (the static sm_90 report found an RNN's input
    projection, 8192 x 256, on 64 of 132 SMs with 128 x 256 tiles)."""
    block_m, block_n, block_k, num_warps, num_stages = GEMM_TILES[dtype]
    block_m, block_n = _block(rows, 16, block_m), _block(cols, 16, block_n)
    while cdiv(rows, block_m) * cdiv(cols, block_n) < programs and max(block_m, block_n) > 64:
        if block_n >= block_m:
            block_n //= 2
        else:
            block_m //= 2
    # A tile clamped to a small problem has too little work for the full complement of warps.
    if block_m * block_n < GEMM_TILES[dtype][0] * GEMM_TILES[dtype][1]:
        num_warps = 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=_block(inner, 16, block_k), num_warps=num_warps,
                num_stages=num_stages)


def _configs(dtype: torch.dtype, config: dict) -> list:
    """`config` first, then, where it is the dtype's full tile, the GPU alternatives to time."""
    if (config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]) != GEMM_TILES[dtype][:3]:
        return [config]
    names = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")
    return [config] + [dict(zip(names, alternative)) for alternative in GEMM_ALTERNATIVES[dtype]]


def _matmul(a, b, c, *, k_per_split, bias=None, activation=None, z=None, row_sums=None, config=None):
    """c[s] = act(a[:, s-th slice] @ b[s-th slice, :] + bias) for 2-D `a` and `b` of any strides.

    `c` is (splits, rows, cols) and `row_sums` (splits, rows); slice s of the inner dim is
    [s * k_per_split, (s + 1) * k_per_split). With one split these are views of the outputs
    themselves and bias, activation and z (the pre-activation, stored like c) may be given.
    """
    rows, inner = a.shape
    cols = b.shape[1]
    num_splits = c.shape[0]
    if config is None:
        config = _tiles(a.dtype, rows, cols, inner, streaming_multiprocessors(a.device))

    def grid(meta):
        # A product with no columns still runs one column of programs, for the row sums.
        return cdiv(rows, meta["BLOCK_M"]) * max(1, cdiv(cols, meta["BLOCK_N"])), num_splits

    launch_tuned(matmul_kernel, grid, _configs(a.dtype, config), key=("M", "N", "K"))(
        a, b, c, bias if bias is not None else c, z if z is not None else c,
        row_sums if row_sums is not None else c,
        rows, cols, inner, k_per_split,
        *a.stride(), *b.stride(), *c.stride(),
        bias.stride(0) if bias is not None else 0, row_sums.stride(0) if row_sums is not None else 0,
        HAS_BIAS=bias is not None, ACTIVATION=ACTIVATIONS[activation], STORE_PREACTIVATION=z is not None,
        ROW_SUMS=row_sums is not None, GROUP_M=GROUP_M, ACC_DTYPE=accumulator_dtype(a.dtype),
        **dot_options(a.dtype, _allow_tf32(TF32_FLAG)),
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
    config = _tiles(dz.dtype, N, b.shape[1], M, streaming_multiprocessors(dz.device))
    if splits is None:
        tiles = cdiv(N, config["BLOCK_M"]) * max(1, cdiv(b.shape[1], config["BLOCK_N"]))
        splits = cdiv(parallel_programs(dz.device), tiles)
    # Each slice gets a whole number of BLOCK_K rows; with M == 0 one empty slice writes zeros.
    block_k = config["BLOCK_K"]
    k_per_split = cdiv(cdiv(M, max(1, int(splits))), block_k) * block_k or block_k
    num_splits = max(1, cdiv(M, k_per_split))

    if num_splits == 1:
        out = dw if need_weight else torch.empty((N, 0), device=dz.device, dtype=x.dtype)
        _matmul(a, b, out.unsqueeze(0), k_per_split=k_per_split, row_sums=None if db is None else db.unsqueeze(0),
                config=config)
        return dw, db

    acc_dtype = accumulator_torch_dtype(dz.dtype)
    part_dw = torch.empty((num_splits, N, b.shape[1]), device=dz.device, dtype=acc_dtype)
    part_db = torch.empty((num_splits, N), device=dz.device, dtype=acc_dtype) if need_bias else None
    _matmul(a, b, part_dw, k_per_split=k_per_split, row_sums=part_db, config=config)
    for part, out in ((part_dw, dw), (part_db, db)):
        if out is not None:
            sum_partials(part, out)
    return dw, db
