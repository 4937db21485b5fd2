"""The fixed-order sum of split partials: the last step of every deterministic split reduction.

A reduction that is long compared with its output (conv2d's and linear's weight gradients over
all output positions, batchnorm's and layernorm's parameter gradients over all rows) is cut into
P slices so that enough programs run at once. Each slice writes its partial sums to one row of a
workspace instead of adding them into the output with float atomics, whose order (and so whose
rounding) changes from run to run. This kernel then adds the rows up, always in the same order:

    part: (P, N), contiguous, fp32 (fp64 for fp64)      out: N elements, any strides

                 columns 0 .. N-1                  out[j] = sum over p of part[p, j]
              +------------------------+
    row 0     |      [ BLOCK_N ]       |   One program per block of BLOCK_N columns walks the
    row 1     |      [ columns ]       |   rows in blocks of BLOCK_P, always in the same order:
     ...      |      [         ]       |   each block is summed down its columns (tl.sum, a fixed
    row P-1   |      [         ]       |   tree) and added to the program's running total, which
              +------------------------+   is rounded once, to out's dtype, at the end.

So the result depends on (P, N) and the block sizes alone, which depend on the shapes alone: the
same shape on the same device gives the same bits on every call.

Column j of the workspace is element j of `out` in its logical (row-major) order, and `out` is
written by its strides (`plan` in kernels/_common.py), so a channels_last weight gradient or a
strided view is written in place. A second output, `copy`, receives the same sums rounded to its
own dtype: batchnorm keeps the fp32 sums for its dx kernel and returns dweight and dbias in the
parameters' dtype, from one pass over the partials.

Offsets are int64: a split-K workspace holds P x N values, which can pass 2**31 even when N does
not.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels._common import (_block, accumulator_dtype, cdiv, interpreted_run, launch, plan,
                                        streaming_multiprocessors, strided_offsets, unravel)

# Widest column block, and the most partials one program loads at a time (BLOCK_P * BLOCK_N).
MAX_BLOCK_N = 128
TILE_ELEMENTS = 4096
# Under the interpreter: numpy sums a wide block in about the time of a narrow one, so a conv's
# weight gradient (millions of columns) takes tens of programs instead of tens of thousands.
INTERPRETED_MAX_BLOCK_N = 65536
INTERPRETED_TILE_ELEMENTS = 262144


@triton.jit
def sum_partials_kernel(
    part_ptr,  # (P, N) partial sums, contiguous, in the accumulator dtype
    out_ptr,  # the N sums, element j (in logical order) at the strides of the layout's axes
    copy_ptr,  # the same sums in another dtype, shaped like out (written only when HAS_COPY)
    P, N, D1, D2, D3,
    stride_out0, stride_out1, stride_out2, stride_out3,
    stride_copy0, stride_copy1, stride_copy2, stride_copy3,
    HAS_COPY: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # Map the program id to its block of columns. int64: the row offsets p * N below can pass
    # 2**31, and so can N itself.
    cols = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N

    # Walk the P rows in blocks of BLOCK_P, always in the same order.
    total = tl.zeros([BLOCK_N], dtype=ACC_DTYPE)
    for p_start in range(0, P, BLOCK_P):
        p = p_start + tl.arange(0, BLOCK_P)
        offsets = p.to(tl.int64)[:, None] * N + cols[None, :]
        mask = (p < P)[:, None] & col_mask[None, :]
        total += tl.sum(tl.load(part_ptr + offsets, mask=mask, other=0.0), axis=0)

    # Column j is element j of out (and of copy) in logical order: its indices on the layout's
    # axes, dotted with each output's strides, give its offset. (Once per column, after the
    # loop, so there is no FLAT path: a dense output is one axis of stride 1.)
    i0, i1, i2, i3 = unravel(cols, D1, D2, D3)
    out_offsets = strided_offsets(i0, i1, i2, i3, stride_out0, stride_out1, stride_out2, stride_out3)
    tl.store(out_ptr + out_offsets, total.to(out_ptr.dtype.element_ty), mask=col_mask)
    if HAS_COPY:
        copy_offsets = strided_offsets(i0, i1, i2, i3, stride_copy0, stride_copy1, stride_copy2, stride_copy3)
        tl.store(copy_ptr + copy_offsets, total.to(copy_ptr.dtype.element_ty), mask=col_mask)


def sum_partials(part: torch.Tensor, out: torch.Tensor, copy: torch.Tensor | None = None) -> torch.Tensor:
    """out = part.sum(0) in a fixed order (deterministic, no atomics); returns `out`.

    `part` is a contiguous (P, ...) workspace whose row p holds the partial of every element of
    `out` in out's logical order (part[p] has out.numel() elements), in the accumulator dtype.
    `out` may have any strides; `copy`, when given, has out's shape and receives the same sums in
    its own dtype.
    """
    N = out.numel()
    P = part.shape[0]
    if part.numel() != P * N or not part.is_contiguous():
        raise ValueError(f"sum_partials: part must be a contiguous (P, {N}) workspace, got shape "
                         f"{tuple(part.shape)} and strides {part.stride()}")
    if N == 0:
        return out
    outputs = [out] if copy is None else [out, copy]
    layout = plan(outputs, range(out.dim()))
    if layout is None:
        # An output needing more than MAX_DIMS axes (no launcher here makes one): sum into
        # contiguous tensors, then copy into place.
        staged = [torch.empty(t.shape, device=t.device, dtype=t.dtype) for t in outputs]
        sum_partials(part, *staged)
        for t, s in zip(outputs, staged):
            t.copy_(s)
        return out
    D0, D1, D2, D3 = layout.sizes
    # Narrower column blocks (down to 8: one 32-byte sector of fp32 partials per row) while the
    # grid would leave SMs idle: a LayerNorm backward over 4096 columns sums ~1000 partials per
    # column, which is 32 programs at 128 columns.
    interpreted = interpreted_run()
    block_n = _block(N, 1, INTERPRETED_MAX_BLOCK_N if interpreted else MAX_BLOCK_N)
    sm_count = streaming_multiprocessors(part.device)
    while block_n > 8 and cdiv(N, block_n) < sm_count:
        block_n //= 2
    block_p = _block(P, 1, (INTERPRETED_TILE_ELEMENTS if interpreted else TILE_ELEMENTS) // block_n)
    copy_strides = layout.strides[1] if copy is not None else (0, 0, 0, 0)
    launch(sum_partials_kernel, (cdiv(N, block_n),))(
        part, out, copy if copy is not None else out, P, N, D1, D2, D3, *layout.strides[0], *copy_strides,
        HAS_COPY=copy is not None, BLOCK_P=block_p, BLOCK_N=block_n, ACC_DTYPE=accumulator_dtype(part.dtype),
    )
    return out
