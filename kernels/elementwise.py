"""Elementwise activation kernels (ReLU, exact GELU, tanh GELU), forward and backward.

`backward` is the one activation backward of the library: the conv2d and linear launchers hand
their fused epilogue's gradient to it too (`activation_backward` there).

Layout
------
An elementwise op only needs each output element to line up with the inputs at the same logical
index; the order in which elements are visited is free. The launchers visit them in the output's
memory order and merge adjacent dims wherever every tensor's strides allow (`plan` in
kernels/_common.py, which kernels/dropout.py uses too). What remains is at most MAX_DIMS axes,
sizes (D0, D1, D2, D3) with D3 innermost, and each tensor gets one stride per axis. A kernel turns
the visit index k into the four axis indices once and each tensor's offset is their dot product
with its strides, so transposed, sliced, expanded and channels_last tensors are all read in place.

When every tensor is dense in the visit order (the usual case: a contiguous or channels_last
input and an output allocated like it), everything merges into one axis of stride 1 and the
constexpr FLAT skips the index arithmetic: element k lives at offset k in every tensor.

Kernels
-------
  activation_forward_kernel   y = act(x)
  activation_backward_kernel  dx = dy * act'(.) from the saved tensor: y for ReLU (y > 0 exactly
                              where x > 0), x for both GELUs.
The activation codes, the activations and their derivatives are the shared ones of
kernels/activations.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonprop.kernels._common import accumulator_dtype, cdiv, launch, plan, strided_offsets, unravel
from tritonprop.kernels.activations import ACTIVATIONS, apply_activation, apply_activation_grad

# Elements per program: 8 per thread at 4 warps, one 16-byte access per thread for bf16. Not
# autotuned: a streaming kernel gains little from it and every config costs compile time.
BLOCK = 1024
NUM_WARPS = 4


# ----------------------------------------------------------------------------------------------
# Layout planning (host side)
# ----------------------------------------------------------------------------------------------


def memory_order(t: torch.Tensor) -> list:
    """t's dims from outermost to innermost in memory (largest stride first; ties keep dim order)."""
    strides = t.stride()  # once: each t.stride(d) would be a call into torch
    # A reversed sort is stable too: equal strides keep their dims' order.
    return sorted(range(len(strides)), key=strides.__getitem__, reverse=True)


def has_internal_overlap(t: torch.Tensor) -> bool:
    """Some memory location holds more than one element (an expanded dim), as torch detects it."""
    # An empty tensor has no element to share a location, however it is strided (torch agrees).
    strides = t.stride()
    # (`0 in strides` first: the usual tensor has no stride 0, and is answered without a loop.)
    return 0 in strides and t.numel() > 0 and any(stride == 0 and size > 1 for size, stride in zip(t.shape, strides))


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
    y = apply_activation(x, ACTIVATION)
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
    dx = apply_activation_grad(dy, saved, ACTIVATION)
    tl.store(dx_ptr + dx_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch functions
# ----------------------------------------------------------------------------------------------


def _launch(kernel, tensors, layout, activation, acc_dtype):
    D0, D1, D2, D3 = layout.sizes
    numel = D0 * D1 * D2 * D3
    launch(kernel, (cdiv(numel, BLOCK),))(
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
    """dx = dy * act'(.): `saved` is the forward's output for 'relu', its input for the GELUs.

    dx is laid out like `saved`; dy may have any strides (even 0, when it was expanded from a sum).
    """
    dx = torch.empty_like(saved)
    if saved.numel() == 0:
        return dx
    layout = plan([dy, saved, dx], memory_order(dx))
    if layout is None:
        # As in `forward`: a dy or saved view with too many axes is copied once.
        return dx.copy_(backward(dy.contiguous(), saved.contiguous(), activation))
    _launch(activation_backward_kernel, [dy, saved, dx], layout, activation, accumulator_dtype(saved.dtype))
    return dx
