"""Layer normalization: the autograd.Function, `layer_norm` with F.layer_norm's signature, `LayerNorm`.

The module subclasses torch's, so construction (``elementwise_affine``, ``bias``), parameters
and `state_dict` are torch's own; only the forward is ours.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from tritonprop import backend
from tritonprop.kernels import layernorm as K
from tritonprop.ops import _checks
from tritonprop.ops._autocast import cast_to_float32_on_cuda
from tritonprop.ops.reference import layernorm as reference

OP = "layer_norm"


class LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, normalized_ndim, eps):
        y, mean, rstd = K.forward(input, normalized_ndim, weight, bias, eps)
        ctx.save_for_backward(input, weight, bias, mean, rstd)
        ctx.normalized_ndim = normalized_ndim
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        input, weight, bias, mean, rstd = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        dx, dweight, dbias = K.backward(
            dy, input, ctx.normalized_ndim, weight, bias, mean, rstd,
            need_input=need_input, need_weight=need_weight, need_bias=need_bias,
        )
        return dx, dweight, dbias, None, None


def _normalized_shape(normalized_shape) -> tuple[int, ...]:
    # F.layer_norm takes a sequence of ints only (an int alone is a TypeError there; the module
    # turns an int into a 1-tuple before calling it).
    if not isinstance(normalized_shape, (tuple, list, torch.Size)):
        raise TypeError(f"{OP}: normalized_shape must be a tuple of ints, not {type(normalized_shape).__name__}")
    for size in normalized_shape:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"{OP}: normalized_shape must be a tuple of ints, but found element of type "
                            f"{type(size).__name__}")
    if not normalized_shape:
        raise RuntimeError(f"{OP}: expected normalized_shape to be at least 1-dimensional, i.e., containing at "
                           "least one element, but got normalized_shape = []")
    return tuple(normalized_shape)


def _validate(input, normalized_shape, weight, bias):
    _checks.check_floating(OP, "input", input)
    shape = list(normalized_shape)
    if input.dim() < len(shape) or list(input.shape[input.dim() - len(shape):]) != shape:
        # torch's message, naming the argument.
        raise RuntimeError(f"{OP}: given normalized_shape={shape}, expected input with shape [*, "
                           f"{', '.join(map(str, shape))}], but got input of size {list(input.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        _checks.check_tensor(OP, name, t)
        _checks.check_param_dtype(OP, name, t, input.dtype)
        if list(t.shape) != shape:
            raise RuntimeError(f"{OP}: expected {name} to be of same shape as normalized_shape, but got {name} of "
                               f"shape {list(t.shape)} and normalized_shape = {shape}")
    if weight is not None and bias is not None and weight.dtype != bias.dtype:
        # torch rejects this pairing too (its mixed-precision kernel takes both in float32).
        raise TypeError(f"{OP}: bias has dtype {bias.dtype}, but weight has dtype {weight.dtype}; they must match")


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """`torch.nn.functional.layer_norm`, computed by Triton kernels."""
    normalized_shape = _normalized_shape(normalized_shape)
    _checks.check_tensor(OP, "input", input)
    # Cast first, as torch does: under CUDA autocast, float32 input with half weights is valid.
    input, weight, bias = cast_to_float32_on_cuda(input.device.type, [input, weight, bias])
    _validate(input, normalized_shape, weight, bias)
    if backend.use_reference():
        return reference.layer_norm(input, normalized_shape, weight, bias, eps)
    backend.check_devices(OP, input=input, weight=weight, bias=bias)
    # The kernels read weight and bias flat; they are small, so a copy of a strided one is cheap.
    if weight is not None:
        weight = weight.contiguous()
    if bias is not None:
        bias = bias.contiguous()
    return LayerNormFn.apply(input, weight, bias, len(normalized_shape), float(eps))


class LayerNorm(torch.nn.LayerNorm):
    """Drop-in `torch.nn.LayerNorm`: any trailing ``normalized_shape``, with or without weight and bias."""

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
