"""Layer normalization: the custom ops with their autograd, `layer_norm` with F.layer_norm's signature, `LayerNorm`.

The module subclasses torch's, so construction (``elementwise_affine``, ``bias``), parameters
and `state_dict` are torch's own; only the forward is ours.
"""
from __future__ import annotations

import operator
from typing import Optional

import torch
from torch import Tensor

from tritonprop.kernels import layernorm as K
from tritonprop.ops import _checks
from tritonprop.ops._library import absent, call, differentiable, dispatch, kernel_op, not_differentiable, wanted

OP = "layer_norm"


@kernel_op("layer_norm")
def layer_norm_op(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], normalized_ndim: int,
                  eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd): the forward kernel; mean and rstd are kept for the backward."""
    return K.forward(input, normalized_ndim, weight, bias, eps)


@kernel_op("layer_norm_backward")
def layer_norm_backward_op(dy: Tensor, input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                           rstd: Tensor, normalized_ndim: int, needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias), each `absent` unless its ``needs`` entry is set."""
    grads = K.backward(dy, input, normalized_ndim, weight, bias, mean, rstd, *needs)
    return tuple(g if g is not None else absent(input) for g in grads)


def _setup_context(ctx, inputs, output):
    input, weight, bias, normalized_ndim, eps = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, weight, bias, mean, rstd)
    ctx.normalized_ndim = normalized_ndim
    ctx.eps = eps


def _backward(ctx, dy, _dmean, _drstd):
    if dy is None:  # y did not reach the loss (grads are not materialized)
        return None, None, None, None, None
    input, weight, bias, mean, rstd = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
             bias is not None and ctx.needs_input_grad[2]]
    # Grad mode is on inside backward exactly when the caller asked for a graph of the gradient.
    if torch.is_grad_enabled():
        grads = _differentiable_backward(ctx, dy, input, weight, bias, mean.dtype)
    else:
        grads = call(layer_norm_backward_op, dy, input, weight, bias, mean, rstd, ctx.normalized_ndim, needs)
    return (*wanted(grads, needs), None, None)


differentiable(layer_norm_op, setup_context=_setup_context, backward=_backward)
not_differentiable(layer_norm_backward_op, explanation="the kernel's gradient is not differentiable; layer_norm's "
                   "gradient under create_graph=True is built from differentiable ops instead")


def _differentiable_backward(ctx, dy, input, weight, bias, acc):
    """(dx, dweight, dbias) in torch ops that autograd can differentiate again, for create_graph=True.

    The row statistics depend on the input, so they are recomputed from the saved input (the
    kernel's mean and rstd carry no graph); the formulas are those of the backward kernel, in the
    accumulator dtype `acc`.
    """
    normalized_dims = list(range(input.dim() - ctx.normalized_ndim, input.dim()))
    row_dims = list(range(input.dim() - ctx.normalized_ndim))
    x = input.to(acc)
    mean = x.mean(normalized_dims, keepdim=True)
    rstd = torch.rsqrt((x - mean).square().mean(normalized_dims, keepdim=True) + ctx.eps)
    xhat = (x - mean) * rstd
    g = dy.to(acc)
    dweight = (g * xhat).sum(row_dims).to(weight.dtype) if weight is not None else None
    dbias = g.sum(row_dims).to(bias.dtype) if bias is not None else None
    wg = g * weight.to(acc) if weight is not None else g
    dx = rstd * (wg - wg.mean(normalized_dims, keepdim=True)
                 - xhat * (wg * xhat).mean(normalized_dims, keepdim=True))
    return dx.to(input.dtype), dweight, dbias


def _normalized_shape(normalized_shape) -> tuple[int, ...]:
    # F.layer_norm takes a sequence of ints only (an int alone is a TypeError there; the module
    # turns an int into a 1-tuple before calling it). Like torch's int arguments, the ints may be
    # numpy integers, but not bools or floats.
    if not isinstance(normalized_shape, (tuple, list, torch.Size)):
        raise TypeError(f"{OP}: normalized_shape must be a tuple of ints, not {type(normalized_shape).__name__}")
    sizes = []
    for size in normalized_shape:
        if isinstance(size, torch.Tensor) or not _checks.is_int_like(size):
            raise TypeError(f"{OP}: normalized_shape must be a tuple of ints, but found element of type "
                            f"{type(size).__name__}")
        sizes.append(operator.index(size))
    if not sizes:
        raise RuntimeError(f"{OP}: expected normalized_shape to be at least 1-dimensional, i.e., containing at "
                           "least one element, but got normalized_shape = []")
    return tuple(sizes)


def _validate(input, normalized_shape, weight, bias):
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
        raise RuntimeError(f"{OP}: bias has dtype {bias.dtype}, but weight has dtype {weight.dtype}; they must match")
    # After the parameter checks: torch refuses integer input beside float parameters as a dtype
    # mismatch, and alone as not implemented.
    if not input.is_floating_point():
        raise NotImplementedError(f"{OP}: input of dtype {input.dtype} is not supported; tritonprop's {OP} "
                                  "takes floating-point tensors, as torch's does")


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """`torch.nn.functional.layer_norm`, computed by Triton kernels."""
    normalized_shape = _normalized_shape(normalized_shape)
    _checks.check_tensor(OP, "input", input)
    eps = _checks.real_number(OP, "eps", eps)
    # The shapes and dtypes are checked after the cast, as torch does: under CUDA autocast,
    # float32 input with half weights is valid.
    return dispatch(OP, dict(input=input, weight=weight, bias=bias),
                    check_cast=lambda input, weight, bias: _validate(input, normalized_shape, weight, bias),
                    kernels=lambda input, weight, bias: call(layer_norm_op, input, weight, bias,
                                                             len(normalized_shape), eps)[0],
                    reference=lambda naive, input, weight, bias: naive(input, normalized_shape, weight, bias, eps))


class LayerNorm(torch.nn.LayerNorm):
    """Drop-in `torch.nn.LayerNorm`: any trailing ``normalized_shape``, with or without weight and bias."""

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
