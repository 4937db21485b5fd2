"""Linear: the autograd.Function, `linear` with F.linear's signature, and the `Linear` module.

`linear` and `Linear` also take a keyword-only ``activation`` (None, 'relu', 'gelu' or
'gelu_tanh', the tanh approximation of GELU): bias and activation are then applied in the matmul
kernel's epilogue, and the backward differentiates through them.
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from tritonprop import backend
from tritonprop.kernels import linear as K
from tritonprop.ops import _checks
from tritonprop.ops._autocast import cast_to_lower_precision
from tritonprop.ops.reference import linear as reference

OP = "linear"
ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")


class LinearFn(torch.autograd.Function):
    """act(x @ weight^T + bias) for a 2-D x; `linear` flattens the leading dims before and after."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        y, saved = K.forward(x, weight, bias, activation)
        ctx.save_for_backward(x, weight, saved)
        ctx.activation = activation
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, saved = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_bias = need_bias and ctx.has_bias
        dz = K.activation_backward(dy, saved, ctx.activation) if ctx.activation else dy
        dx = dweight = dbias = None
        if need_input:
            dx = K.backward_input(dz, weight)
        if need_weight or need_bias:
            dweight, dbias = K.backward_weight(dz, x, need_weight=need_weight, need_bias=need_bias)
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
        raise NotImplementedError(f"{OP}: a 1-D weight (torch's matrix-vector form) is not implemented; "
                                  f"pass weight.unsqueeze(0) of size [1, {weight.shape[0]}]")
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
        if bias.dim() != 1 or bias.shape[0] != out_features:
            output_shape = (*input.shape[:-1], out_features)
            try:
                broadcasts = torch.broadcast_shapes(bias.shape, output_shape) == output_shape
            except RuntimeError:
                broadcasts = False
            if broadcasts:
                raise NotImplementedError(f"{OP}: a bias of size {list(bias.shape)} broadcast against the output is "
                                          f"not implemented; only a 1-D bias of {out_features} (out_features) elements")
            raise RuntimeError(f"{OP}: expected bias to be 1-D with {out_features} (out_features) elements, "
                               f"but got bias of size {list(bias.shape)}")


def _check_dtypes(input, weight, bias):
    # After autocast's cast, as torch checks them.
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise RuntimeError(f"{OP}: expected input and {name} to have the same dtype, "
                               f"but got: {input.dtype} != {t.dtype}")


def linear(input, weight, bias=None, *, activation=None):
    """`torch.nn.functional.linear`, computed by Triton kernels; optionally ``activation(linear)``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: activation must be one of None, 'relu', 'gelu', 'gelu_tanh', got {activation!r}")
    _validate(input, weight, bias)
    input, weight, bias = cast_to_lower_precision(input.device.type, [input, weight, bias])
    _check_dtypes(input, weight, bias)
    if backend.use_reference():
        return reference.linear(input, weight, bias, activation=activation)
    backend.check_devices(OP, input=input, weight=weight, bias=bias)
    out_features, in_features = weight.shape
    leading = input.shape[:-1]
    # The kernels read x through its two strides, so a 2-D input of any strides is used as it
    # is. reshape is a view whenever the leading dims merge into one row stride; it copies only
    # when they cannot (permuted leading dims, or a slice of a middle dim), because the kernel
    # addresses rows by one stride.
    x = input.reshape(math.prod(leading), in_features)
    with torch.autocast(input.device.type, enabled=False):
        y = LinearFn.apply(x, weight, bias, activation)
    return y.reshape(*leading, out_features)


class Linear(torch.nn.Linear):
    """Drop-in `torch.nn.Linear`, with an optional fused ``activation`` after the bias."""

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
