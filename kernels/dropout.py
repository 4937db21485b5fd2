"""Dropout: a counter-based random mask, regenerated in the backward instead of stored.

The mask
--------
The element with logical (row-major) index L is kept when u(L) >= p, where

    u(L) = uniform number (L mod 4) of Philox4x32-10(key = seed, counter = L div 4)

as `tl.rand4x` computes it: one Philox call yields four uniforms, so four neighbouring elements
share a call. The mask depends on (seed, p, L) alone, not on the block size, the memory layout or
the pass, so the backward regenerates exactly the forward's mask from the 8-byte seed instead of
reading back a stored mask. ops/reference/dropout.py spells Philox out in numpy and reproduces the
mask bit for bit.

Dropout is linear in its input, y = x * m / (1 - p) with m in {0, 1}, so its backward
dx = dy * m / (1 - p) is the same map applied to dy: one kernel serves both passes.

`p` and the scale 1 / (1 - p) reach the kernel as fp32 scalars (Triton passes Python floats as
fp32), as torch's CUDA kernel uses them for every dtype but float64; a float64 input is scaled by
1 / (1 - p) rounded to fp32.

Layout: the kernel visits elements in logical order, so the visit index is L, and reads and
writes each tensor by its strides (`plan` in kernels/_common.py finds the axes, and
kernels/elementwise.py explains them); contiguous tensors take the FLAT path.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels._common import accumulator_dtype, cdiv, launch, plan, strided_offsets, unravel

# Groups of four elements per program (1024 elements). Not autotuned, like every kernel here.
BLOCK_GROUPS = 256
NUM_WARPS = 4


@triton.jit
def dropout_kernel(
    input_ptr, output_ptr, seed_ptr, numel, p, scale, D1, D2, D3,
    stride_in0, stride_in1, stride_in2, stride_in3,
    stride_out0, stride_out1, stride_out2, stride_out3,
    FLAT: tl.constexpr, BLOCK_GROUPS: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # Element 4g + k takes uniform k of the Philox call with counter g: the four uniforms of a
    # block of counters are laid side by side as a [BLOCK_GROUPS, 4] tile, which flattened in
    # row-major order is the block's elements in order. int64: a tensor may hold more than 2**31
    # elements.
    group = tl.program_id(0).to(tl.int64) * BLOCK_GROUPS + tl.arange(0, BLOCK_GROUPS)
    lane = tl.arange(0, 4)[None, :]
    u0, u1, u2, u3 = tl.rand4x(tl.load(seed_ptr), group)
    u = tl.where(lane == 0, u0[:, None],
                 tl.where(lane == 1, u1[:, None], tl.where(lane == 2, u2[:, None], u3[:, None])))
    u = tl.reshape(u, [4 * BLOCK_GROUPS])
    index = tl.program_id(0).to(tl.int64) * (4 * BLOCK_GROUPS) + tl.arange(0, 4 * BLOCK_GROUPS)
    mask = index < numel
    # Kept with probability P(u >= p) = 1 - p. Multiplying by 0, not storing 0, is torch's
    # input * mask: a dropped inf or nan becomes nan.
    factor = tl.where(u >= p, scale, 0.0)

    if FLAT:
        in_offsets = index
        out_offsets = index
    else:
        i0, i1, i2, i3 = unravel(index, D1, D2, D3)
        in_offsets = strided_offsets(i0, i1, i2, i3, stride_in0, stride_in1, stride_in2, stride_in3)
        out_offsets = strided_offsets(i0, i1, i2, i3, stride_out0, stride_out1, stride_out2, stride_out3)
    x = tl.load(input_ptr + in_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    tl.store(output_ptr + out_offsets, (x * factor).to(output_ptr.dtype.element_ty), mask=mask)


def forward(x, seed, p, out=None):
    """``x * mask / (1 - p)`` with the mask of (`seed`, `p`); `seed` is a one-element int64 tensor.

    The result goes to `out` when given (``out=x`` is the in-place op), otherwise to
    ``torch.empty_like(x)``.
    """
    y = torch.empty_like(x) if out is None else out
    if x.numel() == 0:
        return y
    layout = plan([x, y], range(x.dim()))
    if layout is None:
        # More than four axes even after merging: run on a contiguous copy (the mask follows the
        # logical index, so it is the same) and copy the result into place.
        return y.copy_(forward(x.contiguous(), seed, p))
    D0, D1, D2, D3 = layout.sizes
    numel = D0 * D1 * D2 * D3
    # At p = 1 nothing is kept (u < 1 always), so the scale is never used; 0 avoids 1/0.
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    launch(dropout_kernel, (cdiv(numel, 4 * BLOCK_GROUPS),))(
        x, y, seed, numel, p, scale, D1, D2, D3, *layout.strides[0], *layout.strides[1],
        FLAT=layout.flat, BLOCK_GROUPS=BLOCK_GROUPS, ACC_DTYPE=accumulator_dtype(x.dtype), num_warps=NUM_WARPS,
    )
    return y


def backward(dy, seed, p):
    """``dy * mask / (1 - p)``: the forward's map applied to dy, the mask regenerated from `seed`."""
    return forward(dy, seed, p)
