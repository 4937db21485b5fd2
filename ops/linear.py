"""Linear: the custom ops with their autograd, `linear` with F.linear's signature, and the `Linear` module.

`linear` and `Linear` also take a keyword-only ``activation`` (None, 'relu', 'gelu' or
'gelu_tanh', the tanh approximation of GELU): bias and activation are then applied in the matmul
kernel's epilogue, and the backward differentiates through them.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from tritonprop.kernels import linear as K
from tritonprop.ops import _checks
from tritonprop.ops._library import absent, call, differentiable, dispatch, kernel_op, not_differentiable, wanted
from tritonprop.ops.activations import activation_backward_op, activation_grad

OP = "linear"
ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")


@kernel_op("linear")
def linear_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], activation: Optional[str]) -> tuple[Tensor, Tensor]:
    """(y, z) = (act(x @ weight^T + bias), the pre-activation z) for a 2-D x; z is `absent` unless
    the activation's backward needs it (the GELUs; ReLU's needs only y)."""
    y, saved = K.forward(x, weight, bias, activation)
    return y, saved if saved is not None and saved is not y else absent(y)


@kernel_op("linear_backward_weight")
def linear_backward_weight_op(dz: Tensor, x: Tensor, needs: list[bool]) -> tuple[Tensor, Tensor]:
    """(dweight, dbias) = (dz^T @ x, the column sums of dz), each `absent` unless asked for."""
    dweight, dbias = K.backward_weight(dz, x, need_weight=needs[0], need_bias=needs[1])
    return (dweight if dweight is not None else absent(dz)), (dbias if dbias is not None else absent(dz))


def _setup_context(ctx, inputs, output):
    x, weight, bias, activation = inputs
    y, z = output
    ctx.mark_non_differentiable(z)
    ctx.set_materialize_grads(False)
    saved = y if activation == "relu" else (z if activation is not None else None)
    ctx.save_for_backward(x, weight, bias, saved)
    ctx.activation = activation


def _backward(ctx, dy, _dz):
    if dy is None:  # y did not reach the loss (grads are not materialized)
        return None, None, None, None
    x, weight, bias, saved = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    if torch.is_grad_enabled():
        return _backward_with_graph(dy, x, weight, bias, saved, ctx.activation, ctx.needs_input_grad[:3])
    dz = call(activation_backward_op, dy, saved, ctx.activation) if ctx.activation else dy
    # dx = dz @ W is the linear of dz with W^T: the forward kernel on a transposed view.
    dx = call(linear_op, dz, weight.t(), None, None)[0] if need_input else None
    dweight = dbias = None
    if need_weight or need_bias:
        grads = call(linear_backward_weight_op, dz, x, [need_weight, need_bias])
        dweight, dbias = wanted(grads, (need_weight, need_bias))
    return dx, dweight, dbias, None


differentiable(linear_op, setup_context=_setup_context, backward=_backward)
not_differentiable(linear_backward_weight_op, explanation="the split-K weight-gradient kernel is not "
                   "differentiable; a graph of linear's gradient uses the linear op itself instead")


def _backward_with_graph(dy, x, weight, bias, saved, activation, needs_input_grad):
    """linear's gradients under create_graph=True, as a graph that autograd differentiates again.

    Both input products are linears themselves, on transposed views: dx = dz @ W is
    linear(dz, W^T) and dW = dz^T @ x is linear(dz^T, x^T). So gradients of every order run on the
    same kernels, and each one's backward is this function again.
    """
    need_input, need_weight, need_bias = needs_input_grad
    dz = dy
    if activation == "relu":
        # The saved output y has the mask of z, and the mask has no derivative.
        dz = activation_grad(dy, saved, activation)
    elif activation is not None:
        # The saved z is a kernel output without a graph: recompute it differentiably.
        dz = activation_grad(dy, call(linear_op, x, weight, bias, None)[0], activation)
    dx = call(linear_op, dz, weight.t(), None, None)[0] if need_input else None
    dweight = call(linear_op, dz.t(), x.t(), None, None)[0] if need_weight else None
    dbias = dz.sum(dim=0) if need_bias else None
    return dx, dweight, dbias, None


def _validate(input, weight, bias):
    for name, t in (("input", input), ("weight", weight)):
        _checks.check_tensor(OP, name, t)
        if not t.is_floating_point():
            # torch computes integer linears on the CPU (not on CUDA); the kernels are float only.
            raise NotImplementedError(f"{OP}: {name} has dtype {t.dtype}; only floating-point linear is implemented")
    if input.dim() == 0:
        raise RuntimeError(f"{OP}: both arguments to linear need to be at least 1D, but input is 0-D")
    if weight.dim() == 1:
        _validate_matrix_vector(input, weight, bias)
        return
    if weight.dim() != 2:
        raise RuntimeError(f"{OP}: expected weight to be 2-D (out_features, in_features), "
                           f"but got weight of size {list(weight.shape)}")
    out_features, in_features = weight.shape
    if input.shape[-1] != in_features:
        rows = math.prod(input.shape[:-1])
        raise RuntimeError(f"{OP}: the last dim of input ({input.shape[-1]}) must equal weight's in_features "
                           f"({in_features}): mat1 and mat2 shapes cannot be multiplied "
                           f"({rows}x{input.shape[-1]} and {in_features}x{out_features})")
    if bias is not None:
        _checks.check_tensor(OP, "bias", bias)
        # A 0-d or one-element bias is broadcast along the features by torch, as by `expand`.
        if bias.dim() > 1 or (bias.dim() == 1 and bias.shape[0] not in (1, out_features)):
            output_shape = (*input.shape[:-1], out_features)
            try:
                broadcasts = torch.broadcast_shapes(bias.shape, output_shape) == output_shape
            except RuntimeError:
                broadcasts = False
            if broadcasts:
                raise NotImplementedError(f"{OP}: a bias of size {list(bias.shape)} broadcast against the output is "
                                          f"not implemented; only a bias of {out_features} (out_features) "
                                          "elements, or of one")
            raise RuntimeError(f"{OP}: expected bias to be 1-D with {out_features} (out_features) elements, "
                               f"but got bias of size {list(bias.shape)}")


def _validate_matrix_vector(input, weight, bias):
    """torch's linear with a 1-D weight: a matrix-vector product, whose output drops the last dim."""
    if input.shape[-1] != weight.shape[0]:
        raise RuntimeError(f"{OP}: the last dim of input ({input.shape[-1]}) must equal the size of the 1-D weight "
                           f"({weight.shape[0]})")
    if bias is None:
        return
    _checks.check_tensor(OP, "bias", bias)
    if bias.dim() == 0 and input.dim() != 2:
        # torch adds it to the matmul's output, and so do we, in the epilogue.
        return
    if input.dim() == 2 or (input.dim() > 2 and bias.dim() == 1 and input.is_contiguous()):
        raise RuntimeError(f"{OP}: this bias beside a 1-D weight takes torch's fused path, which needs a 2-D "
                           f"weight (mat2 must be a matrix); input has size {list(input.shape)}, "
                           f"bias {list(bias.shape)}")
    output_shape = tuple(input.shape[:-1])
    try:
        fits = torch.broadcast_shapes(bias.shape, output_shape) == output_shape
    except RuntimeError:
        fits = False
    if fits:
        raise NotImplementedError(f"{OP}: a bias of size {list(bias.shape)} beside a 1-D weight is not implemented; "
                                  "only a 0-d one")
    raise RuntimeError(f"{OP}: a bias of size {list(bias.shape)} cannot be added to the output of size "
                       f"{list(output_shape)} (a 1-D weight drops the last dim)")


def _check_dtypes(input, weight, bias):
    # After autocast's cast, as torch checks them.
    _checks.check_same_dtype(OP, input, (("weight", weight), ("bias", bias)),
                             "expected input and {name} to have the same dtype, but got: {input} != {other}")


def _linear_kernels(input, weight, bias, activation):
    out_features, in_features = weight.shape
    if bias is not None and bias.shape != (out_features,):
        # A stride-0 view: the kernel reads the bias by its stride.
        bias = bias.expand(out_features)
    leading = input.shape[:-1]
    # The kernels read x through its two strides, so a 2-D input of any strides is used as it
    # is. reshape is a view whenever the leading dims merge into one row stride; it copies only
    # when they cannot (permuted leading dims, or a slice of a middle dim), because the kernel
    # addresses rows by one stride.
    x = input.reshape(math.prod(leading), in_features)
    y = call(linear_op, x, weight, bias, activation)[0]
    return y.reshape(*leading, out_features)


def linear(input, weight, bias=None, *, activation=None):
    """`torch.nn.functional.linear`, computed by Triton kernels; optionally ``activation(linear)``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: activation must be one of None, 'relu', 'gelu', 'gelu_tanh', got {activation!r}")
    _validate(input, weight, bias)
    if weight.dim() == 1:
        # torch's matrix-vector form: the linear with one output feature, without that dim.
        bias = None if bias is None else bias.reshape(1)
        return linear(input, weight.unsqueeze(0), bias, activation=activation).squeeze(-1)
    return dispatch(OP, dict(input=input, weight=weight, bias=bias), check_cast=_check_dtypes,
                    kernels=lambda input, weight, bias: _linear_kernels(input, weight, bias, activation),
                    reference=lambda naive, input, weight, bias: naive(input, weight, bias, activation=activation))


class Linear(torch.nn.Linear):
    """Drop-in `torch.nn.Linear`, with an optional fused ``activation`` after the bias."""

    # The class default is what `ops.convert` gives a converted torch.nn.Linear.
    activation = None

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, activation=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Linear: activation must be one of None, 'relu', 'gelu', 'gelu_tanh', got {activation!r}")
        self.activation = activation

    def forward(self, input):
        return linear(input, self.weight, self.bias, activation=self.activation)

    def extra_repr(self):
        text = super().extra_repr()
        return f"{text}, activation={self.activation!r}" if self.activation else text
