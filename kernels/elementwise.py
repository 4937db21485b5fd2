"""Elementwise activation kernels (ReLU, exact GELU, tanh GELU), forward and backward, and the
layout planning that every elementwise kernel here shares (kernels/dropout.py uses it too).

Layout
------
An elementwise op only needs each output element to line up with the inputs at the same logical
index; the order in which elements are visited is free. The launchers visit them in a chosen
order of the dims (the output's memory order for activations, the logical order for dropout) and
merge adjacent dims wherever every tensor's strides allow, as batchnorm's `reduction_axes` does.
What remains is at most MAX_DIMS axes, sizes (D0, D1, D2, D3) with D3 innermost, and each tensor
gets one stride per axis. A kernel turns the visit index k into the four axis indices once and
each tensor's offset is their dot product with its strides, so transposed, sliced, expanded and
channels_last tensors are all read in place.

When every tensor is dense in the visit order (the usual case: a contiguous or channels_last
input and an output allocated like it), everything merges into one axis of stride 1 and the
constexpr FLAT skips the index arithmetic: element k lives at offset k in every tensor.

Kernels
-------
  activation_forward_kernel   y = act(x)
  activation_backward_kernel  dx = dy * act'(.) from the saved tensor: y for ReLU (y > 0 exactly
                              where x > 0), x for both GELUs.
The activations and their derivatives are the shared helpers of kernels/activations.py.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from tritonprop.kernels._common import accumulator_dtype, launch
from tritonprop.kernels.activations import gelu, gelu_grad, gelu_tanh, gelu_tanh_grad, relu, relu_grad

# The constexpr ACTIVATION of the kernels.
ACTIVATIONS = {"relu": 0, "gelu": 1, "gelu_tanh": 2}

# Axes a kernel addresses after merging; a view needing more is staged through copies.
MAX_DIMS = 4

# Elements per program: 8 per thread at 4 warps, one 16-byte access per thread for bf16. Not
# autotuned: a streaming kernel gains little from it and every config costs compile time.
BLOCK = 1024
NUM_WARPS = 4


# ----------------------------------------------------------------------------------------------
# Layout planning (host side)
# ----------------------------------------------------------------------------------------------


class Layout(NamedTuple):
    sizes: tuple  # (D0, D1, D2, D3), D3 innermost
    strides: list  # one (s0, s1, s2, s3) per tensor
    flat: bool  # every tensor dense in the visit order: element k at offset k


def memory_order(t: torch.Tensor) -> list:
    """t's dims from outermost to innermost in memory (largest stride first; ties keep dim order)."""
    return sorted(range(t.dim()), key=lambda d: -t.stride(d))


def plan(tensors, order) -> Layout | None:
    """Merge the dims of same-shaped `tensors`, visited in `order` (outermost first), into axes.

    Returns None when more than MAX_DIMS axes remain.
    """
    shape = tensors[0].shape
    strides = [t.stride() for t in tensors]
    axes = []  # each: [size, [stride per tensor]]
    for d in order:
        if shape[d] == 1:
            continue
        # Dim d continues the previous axis when, in every tensor, stepping the previous axis
        # by one is the same as stepping d through its whole extent.
        if axes and all(axis_stride == s[d] * shape[d] for axis_stride, s in zip(axes[-1][1], strides)):
            axes[-1][0] *= shape[d]
            axes[-1][1] = [s[d] for s in strides]
        else:
            axes.append([shape[d], [s[d] for s in strides]])
    if len(axes) > MAX_DIMS:
        return None
    flat = len(axes) == 0 or (len(axes) == 1 and all(s == 1 for s in axes[0][1]))
    axes = [[1, [0] * len(tensors)]] * (MAX_DIMS - len(axes)) + axes
    sizes = tuple(size for size, _ in axes)
    per_tensor = [tuple(axis_strides[k] for _, axis_strides in axes) for k in range(len(tensors))]
    return Layout(sizes, per_tensor, flat)


def has_internal_overlap(t: torch.Tensor) -> bool:
    """Some memory location holds more than one element (an expanded dim), as torch detects it."""
    # An empty tensor has no element to share a location, however it is strided (torch agrees).
    return t.numel() > 0 and any(stride == 0 and size > 1 for size, stride in zip(t.shape, t.stride()))


# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def unravel(index, D1, D2, D3):
    """Visit index -> its indices (i0, i1, i2, i3) on axes of sizes (D0, D1, D2, D3), D3 innermost."""
    i3 = index % D3
    rest = index // D3
    i2 = rest % D2
    rest = rest // D2
    return rest // D1, rest % D1, i2, i3


@triton.jit
def strided_offsets(i0, i1, i2, i3, stride0, stride1, stride2, stride3):
    # The indices are int64 (derived from an int64 visit index), so the offsets are too.
    return i0 * stride0 + i1 * stride1 + i2 * stride2 + i3 * stride3


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def activation_forward_kernel(
    x_ptr, y_ptr, numel, D1, D2, D3,
    stride_x0, stride_x1, stride_x2, stride_x3,
    stride_y0, stride_y1, stride_y2, stride_y3,
    ACTIVATION: tl.constexpr, FLAT: tl.constexpr, BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # int64: a tensor may hold more than 2**31 elements.
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = index < numel
    if FLAT:
        x_offsets = index
        y_offsets = index
    else:
        i0, i1, i2, i3 = unravel(index, D1, D2, D3)
        x_offsets = strided_offsets(i0, i1, i2, i3, stride_x0, stride_x1, stride_x2, stride_x3)
        y_offsets = strided_offsets(i0, i1, i2, i3, stride_y0, stride_y1, stride_y2, stride_y3)

    x = tl.load(x_ptr + x_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    if ACTIVATION == 0:
        # torch.relu(nan) is nan; the compiled tl.maximum inside `relu` returns the other
        # operand (0) for a NaN, so NaN is passed through explicitly.
        y = tl.where(x != x, x, relu(x))
    elif ACTIVATION == 1:
        y = gelu(x)
    else:
        y = gelu_tanh(x)
    tl.store(y_ptr + y_offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def activation_backward_kernel(
    dy_ptr, saved_ptr, dx_ptr, numel, D1, D2, D3,
    stride_dy0, stride_dy1, stride_dy2, stride_dy3,
    stride_s0, stride_s1, stride_s2, stride_s3,
    stride_dx0, stride_dx1, stride_dx2, stride_dx3,
    ACTIVATION: tl.constexpr, FLAT: tl.constexpr, BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    # `saved` is y for ReLU and x for the GELUs.
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = index < numel
    if FLAT:
        dy_offsets = index
        saved_offsets = index
        dx_offsets = index
    else:
        i0, i1, i2, i3 = unravel(index, D1, D2, D3)
        dy_offsets = strided_offsets(i0, i1, i2, i3, stride_dy0, stride_dy1, stride_dy2, stride_dy3)
        saved_offsets = strided_offsets(i0, i1, i2, i3, stride_s0, stride_s1, stride_s2, stride_s3)
        dx_offsets = strided_offsets(i0, i1, i2, i3, stride_dx0, stride_dx1, stride_dx2, stride_dx3)

    dy = tl.load(dy_ptr + dy_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    saved = tl.load(saved_ptr + saved_offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    if ACTIVATION == 0:
        # y > 0 exactly where x > 0, and relu'(0) = 0 as in torch. torch selects rather than
        # multiplies (an infinite dy where y <= 0 gives 0, not nan) and, testing y <= 0, lets
        # dy through where y is nan.
        passes = (relu_grad(saved) > 0.0) | (saved != saved)
        dx = tl.where(passes, dy, 0.0)
    elif ACTIVATION == 1:
        dx = dy * gelu_grad(saved)
    else:
        dx = dy * gelu_tanh_grad(saved)
    tl.store(dx_ptr + dx_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def _launch(kernel, tensors, layout, activation, acc_dtype):
    D0, D1, D2, D3 = layout.sizes
    numel = D0 * D1 * D2 * D3
    launch(kernel, (triton.cdiv(numel, BLOCK),))(
        *tensors, numel, D1, D2, D3, *[s for strides in layout.strides for s in strides],
        ACTIVATION=ACTIVATIONS[activation], FLAT=layout.flat, BLOCK=BLOCK, ACC_DTYPE=acc_dtype,
        num_warps=NUM_WARPS,
    )


def forward(x, activation, out=None):
    """``act(x)`` for activation 'relu', 'gelu' or 'gelu_tanh'.

    The result goes to `out` when given (``out=x`` is the in-place op), otherwise to a new tensor
    laid out as torch's own elementwise ops lay it out (``torch.empty_like``).
    """
    y = torch.empty_like(x) if out is None else out
    if x.numel() == 0:
        return y
    layout = plan([x, y], memory_order(y))
    if layout is None:
        # More than MAX_DIMS axes even after merging (a 5-D view sliced in every dim, say): the
        # op runs on a contiguous copy and the result is copied into place.
        return y.copy_(forward(x.contiguous(), activation))
    _launch(activation_forward_kernel, [x, y], layout, activation, accumulator_dtype(x.dtype))
    return y


def backward(dy, saved, activation):
    """dx = dy * act'(.): `saved` is the forward's output for 'relu', its input for the GELUs."""
    dx = torch.empty_like(saved)
    if saved.numel() == 0:
        return dx
    layout = plan([dy, saved, dx], memory_order(dx))
    if layout is None:
        # As in `forward`: a dy or saved view with too many axes is copied once.
        return dx.copy_(backward(dy.contiguous(), saved.contiguous(), activation))
    _launch(activation_backward_kernel, [dy, saved, dx], layout, activation, accumulator_dtype(saved.dtype))
    return dx
