"""2-D convolution in plain torch autograd, two ways: the oracles for the Triton conv2d kernel.

For an input x of shape (N, C, H, W) and a weight w of shape (K, C/groups, kh, kw), each output
channel k reads only the C/groups input channels of its group g(k) = k // (K/groups):

    y[n, k, oh, ow] = b[k] + sum_{c, r, s} w[k, c, r, s] * x[n, g(k)*C/groups + c, oh*sh - pt + r*dh, ow*sw - pl + s*dw]

with x taken as zero outside the image (the padding). Strictly this is a cross-correlation: the
kernel is not flipped, as in every deep-learning framework. A kernel of kh taps with dilation dh
spans dh*(kh-1) + 1 rows, so

    Ho = (H + pt + pb - dh*(kh-1) - 1) // sh + 1        (and likewise Wo)

padding='valid' means no padding; padding='same' (stride 1 only) pads dh*(kh-1) rows in total,
half on top and the odd one, if any, at the bottom, so that Ho = H. An optional activation
('relu' or the exact erf 'gelu') is applied after the bias, as the fused kernel's epilogue does.

`conv2d_loop` is the formula above written as loops, one small tensor op per output pixel and
kernel tap; `conv2d_unfold` is the classic vectorised form, im2col then one matrix product per
group. Neither has a hand-written backward: autograd derives it (conv2d_numpy.py derives it by
hand). Low-precision inputs are computed in float32 and cast back, as torch's own kernels do.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Conv2dGeometry(NamedTuple):
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]  # (top, bottom, left, right)
    output_size: tuple[int, int]  # (Ho, Wo)


def _pair(name, value):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise RuntimeError(f"conv2d: expected {name} to be a single integer value or a list of 2 values "
                         f"to match the convolution dimensions, but got {name}={value!r}")
    return pair


def conv2d_geometry(input_shape, weight_shape, stride=1, padding=0, dilation=1) -> Conv2dGeometry:
    """Stride, dilation, padding and output size as plain ints, with torch's rules for 'same'/'valid'.

    Only the last two dims of `input_shape` and of `weight_shape` are used, so batched and
    unbatched shapes both work.
    """
    height, width = input_shape[-2:]
    kernel = tuple(weight_shape[-2:])
    stride = _pair("stride", stride)
    dilation = _pair("dilation", dilation)
    if min(stride) <= 0:
        raise RuntimeError(f"conv2d: non-positive stride is not supported, got stride={stride}")
    if min(dilation) <= 0:
        raise RuntimeError(f"conv2d: dilation should be greater than zero, but got dilation={dilation}")

    if isinstance(padding, str):
        if padding == "valid":
            pad_top = pad_bottom = pad_left = pad_right = 0
        elif padding == "same":
            if stride != (1, 1):
                raise RuntimeError("conv2d: padding='same' is not supported for strided convolutions")
            # Each dim needs dilation*(k-1) padded rows in total; torch puts the odd one last.
            total_h, total_w = (d * (k - 1) for d, k in zip(dilation, kernel))
            pad_top, pad_left = total_h // 2, total_w // 2
            pad_bottom, pad_right = total_h - pad_top, total_w - pad_left
        else:
            raise RuntimeError(f"conv2d: Invalid padding string: {padding!r}, expected 'same' or 'valid'")
    else:
        pad_h, pad_w = _pair("padding", padding)
        if min(pad_h, pad_w) < 0:
            raise RuntimeError(f"conv2d: negative padding is not supported, got padding={padding!r}")
        pad_top = pad_bottom = pad_h
        pad_left = pad_right = pad_w

    padded = (height + pad_top + pad_bottom, width + pad_left + pad_right)
    span = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if padded[0] < span[0] or padded[1] < span[1]:
        raise RuntimeError(f"conv2d: Calculated padded input size per channel: ({padded[0]} x {padded[1]}). "
                         f"Kernel size: ({span[0]} x {span[1]}). Kernel size can't be greater than actual input size")
    output_size = tuple((p - k) // s + 1 for p, k, s in zip(padded, span, stride))
    return Conv2dGeometry(stride, dilation, (pad_top, pad_bottom, pad_left, pad_right), output_size)


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


_ACTIVATIONS = {None: lambda x: x, "relu": torch.relu, "gelu": _gelu}


def _prepare(input, weight, bias, stride, padding, dilation, groups, activation):
    """Checks the arguments; returns the padded 4-D input, weight and bias in the compute dtype, and the geometry."""
    if input.dim() not in (3, 4):
        raise RuntimeError(f"conv2d: Expected 3D (unbatched) or 4D (batched) input to conv2d, "
                         f"but got input of size: {list(input.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"conv2d: activation must be None, 'relu' or 'gelu', got {activation!r}")
    out_channels, channels_per_group = weight.shape[:2]
    if groups <= 0 or out_channels % groups != 0:
        raise RuntimeError(f"conv2d: groups={groups} must divide the weight's {out_channels} output channels")
    if input.shape[-3] != channels_per_group * groups:
        raise RuntimeError(f"conv2d: Given groups={groups}, weight of size {list(weight.shape)}, expected input "
                         f"{list(input.shape)} to have {channels_per_group * groups} channels, "
                         f"but got {input.shape[-3]} channels instead")
    geometry = conv2d_geometry(input.shape, weight.shape, stride, padding, dilation)

    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    x = input.to(compute)
    if input.dim() == 3:
        x = x.unsqueeze(0)
    pad_top, pad_bottom, pad_left, pad_right = geometry.padding
    x = F.pad(x, (pad_left, pad_right, pad_top, pad_bottom))
    bias = None if bias is None else bias.to(compute)
    return x, weight.to(compute), bias, geometry


def _finish(y, input, bias, activation):
    """Bias, activation, back to the input's dtype and batchedness: the epilogue shared by both versions."""
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    y = _ACTIVATIONS[activation](y)
    if input.dim() == 3:
        y = y.squeeze(0)
    return y.to(input.dtype)


def conv2d_loop(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
    """The formula as loops: for each output pixel, sum over the kernel taps of a (N, C) x (C, K) product."""
    x, weight, bias, geometry = _prepare(input, weight, bias, stride, padding, dilation, groups, activation)
    batch = x.shape[0]
    out_channels, channels_per_group, kernel_h, kernel_w = weight.shape
    stride_h, stride_w = geometry.stride
    dilation_h, dilation_w = geometry.dilation
    out_h, out_w = geometry.output_size
    # (groups, K/groups, C/groups, kh, kw): each group's output channels see only its input channels.
    grouped_weight = weight.reshape(groups, out_channels // groups, channels_per_group, kernel_h, kernel_w)

    rows = []
    for oh in range(out_h):
        row = []
        for ow in range(out_w):
            pixel = 0
            for r in range(kernel_h):
                for s in range(kernel_w):
                    # x is already padded, so the tap's position needs no "- pad" and no bounds check.
                    tap = x[:, :, oh * stride_h + r * dilation_h, ow * stride_w + s * dilation_w]
                    tap = tap.reshape(batch, groups, channels_per_group)
                    pixel = pixel + torch.einsum("ngc,gkc->ngk", tap, grouped_weight[:, :, :, r, s])
            row.append(pixel.reshape(batch, out_channels))
        rows.append(torch.stack(row, dim=-1))
    return _finish(torch.stack(rows, dim=-2), input, bias, activation)


def conv2d_unfold(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
    """im2col + GEMM: unfold every receptive field into a column, then one matrix product per group."""
    x, weight, bias, geometry = _prepare(input, weight, bias, stride, padding, dilation, groups, activation)
    batch = x.shape[0]
    out_channels, channels_per_group, kernel_h, kernel_w = weight.shape
    # (N, C*kh*kw, Ho*Wo), channel-major within each column, so splitting the rows by group is a reshape.
    columns = F.unfold(x, (kernel_h, kernel_w), dilation=geometry.dilation, stride=geometry.stride)
    out_h, out_w = geometry.output_size
    columns = columns.reshape(batch, groups, channels_per_group * kernel_h * kernel_w, out_h * out_w)
    weight_matrix = weight.reshape(groups, out_channels // groups, channels_per_group * kernel_h * kernel_w)
    y = torch.matmul(weight_matrix, columns)  # (N, groups, K/groups, Ho*Wo), one GEMM per (n, group)
    return _finish(y.reshape(batch, out_channels, out_h, out_w), input, bias, activation)
