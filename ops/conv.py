"""2-D convolution: the custom ops with their autograd, `conv2d` with F.conv2d's signature, `Conv2d`, and BN folding.

`conv2d` and `Conv2d` also take a keyword-only ``activation`` (None, 'relu' or 'gelu'): bias and
activation are then applied in the forward kernel's epilogue, and the backward differentiates
through them.
"""
from __future__ import annotations

import operator
from typing import Optional

import torch
from torch import Tensor

from tritonprop.kernels import conv2d as K
from tritonprop.ops import _checks
from tritonprop.ops._library import absent, call, differentiable, dispatch, kernel_op, wanted
from tritonprop.ops.activations import activation_backward_op, activation_grad
from tritonprop.ops.reference import conv2d as reference

OP = "conv2d"
ACTIVATIONS = (None, "relu", "gelu")


@kernel_op("conv2d")
def conv2d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
              dilation: list[int], groups: int, output_size: list[int], activation: Optional[str]
              ) -> tuple[Tensor, Tensor]:
    """(y, z): act(conv(x, weight) + bias) for a 4-D x, and the pre-activation z, `absent` unless the
    activation's backward needs it (GELU; ReLU's needs only y). ``padding`` is (top, left)."""
    y, saved = K.forward(x, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups,
                         tuple(output_size), activation)
    return y, saved if saved is not None and saved is not y else absent(y)


@kernel_op("conv2d_backward_input")
def conv2d_backward_input_op(dz: Tensor, weight: Tensor, input_shape: list[int], stride: list[int],
                             padding: list[int], dilation: list[int], groups: int, channels_last: bool) -> Tensor:
    """dx: the input gradient of a convolution with `weight` at `dz` (the dgrad kernel)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return K.backward_input(dz, weight, tuple(input_shape), tuple(stride), tuple(padding), tuple(dilation), groups,
                            layout)


@kernel_op("conv2d_backward_weight")
def conv2d_backward_weight_op(dz: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int],
                              dilation: list[int], groups: int, needs: list[bool]) -> tuple[Tensor, Tensor]:
    """(dweight, dbias) of a convolution of `x` at `dz` (the wgrad kernel), each `absent` unless
    asked for; `weight` gives only the shape and layout of dweight."""
    dweight, dbias = K.backward_weight(dz, x, weight, tuple(stride), tuple(padding), tuple(dilation), groups,
                                       need_weight=needs[0], need_bias=needs[1])
    return (dweight if dweight is not None else absent(dz)), (dbias if dbias is not None else absent(dz))


def _is_channels_last(x):
    return K.output_layout(x, x) == torch.channels_last


def _conv2d_setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, output_size, activation = inputs
    y, z = output
    ctx.mark_non_differentiable(z)
    ctx.set_materialize_grads(False)
    saved = y if activation == "relu" else (z if activation is not None else None)
    ctx.save_for_backward(x, weight, bias, saved)
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.output_size = output_size
    ctx.activation = activation


def _conv2d_backward(ctx, dy, _dz):
    none = (None,) * 6
    if dy is None:  # y did not reach the loss (grads are not materialized)
        return (None, None, None, *none)
    x, weight, bias, saved = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    dz = dy
    if ctx.activation and torch.is_grad_enabled():
        # A graph of the gradient is asked for. The saved z or y carries no graph, so z is
        # recomputed from the inputs, and act'(z) is written in torch ops, so every order of
        # derivative flows through it. (ReLU's y has the mask of z, which has no derivative.)
        z = saved if ctx.activation == "relu" else call(conv2d_op, x, weight, bias, *ctx.geometry,
                                                            ctx.output_size, None)[0]
        dz = activation_grad(dy, z, ctx.activation)
    elif ctx.activation:
        dz = call(activation_backward_op, dy, saved, ctx.activation)
    dx = dweight = dbias = None
    if need_input:
        dx = call(conv2d_backward_input_op, dz, weight, list(x.shape), *ctx.geometry, _is_channels_last(x))
    if need_weight or need_bias:
        grads = call(conv2d_backward_weight_op, dz, x, weight, *ctx.geometry, [need_weight, need_bias])
        dweight, dbias = wanted(grads, (need_weight, need_bias))
    return (dx, dweight, dbias, *none)


def _backward_input_setup_context(ctx, inputs, output):
    dz, weight, input_shape, stride, padding, dilation, groups, channels_last = inputs
    ctx.save_for_backward(dz, weight)
    ctx.geometry = (stride, padding, dilation, groups)


def _backward_input_backward(ctx, g):
    """dx is bilinear in (dz, weight): <g, dx> = <dz, conv(g, weight)> = <wgrad(dz, g), weight>, so its
    backward is a forward convolution and a weight gradient, and so on to any order."""
    dz, weight = ctx.saved_tensors
    d_dz = d_weight = None
    if ctx.needs_input_grad[0]:
        d_dz = call(conv2d_op, g, weight, None, *ctx.geometry, list(dz.shape[2:]), None)[0]
    if ctx.needs_input_grad[1]:
        d_weight = call(conv2d_backward_weight_op, dz, g, weight, *ctx.geometry, [True, False])[0]
    return d_dz, d_weight, None, None, None, None, None, None


def _backward_weight_setup_context(ctx, inputs, output):
    dz, x, weight, stride, padding, dilation, groups, needs = inputs
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(dz, x, weight)
    ctx.geometry = (stride, padding, dilation, groups)


def _backward_weight_backward(ctx, g_weight, g_bias):
    """Bilinear in (dz, x): <G, dweight> = <dz, conv(x, G)> = <x, dgrad(dz, G)>; dbias is linear in dz
    alone, its adjoint the broadcast of G_bias over (N, H, W)."""
    dz, x, weight = ctx.saved_tensors
    d_dz = d_x = None
    if ctx.needs_input_grad[0]:
        if g_weight is not None:
            d_dz = call(conv2d_op, x, g_weight, None, *ctx.geometry, list(dz.shape[2:]), None)[0]
        if g_bias is not None:
            spread = g_bias.reshape(1, -1, 1, 1).expand_as(dz)
            d_dz = spread if d_dz is None else d_dz + spread
    if ctx.needs_input_grad[1] and g_weight is not None:
        d_x = call(conv2d_backward_input_op, dz, g_weight, list(x.shape), *ctx.geometry, _is_channels_last(x))
    return d_dz, d_x, None, None, None, None, None, None


differentiable(conv2d_op, setup_context=_conv2d_setup_context, backward=_conv2d_backward)
differentiable(conv2d_backward_input_op, setup_context=_backward_input_setup_context,
               backward=_backward_input_backward)
differentiable(conv2d_backward_weight_op, setup_context=_backward_weight_setup_context,
               backward=_backward_weight_backward)


def _int_pair(name, value):
    """An int or a sequence of ints as torch's int[2] argument takes it: TypeError for anything else.

    Lengths other than 1 and 2 are left for `conv2d_geometry`, which refuses them as torch does.
    """
    if _checks.is_int_like(value):
        return operator.index(value)
    if isinstance(value, (tuple, list, torch.Size)) and all(_checks.is_int_like(v) for v in value):
        return tuple(operator.index(v) for v in value)
    raise TypeError(f"{OP}: {name} must be an int or a tuple of ints, but got {name}={value!r} "
                    f"of type {type(value).__name__}")


def _validate(input, weight, bias, groups):
    for name, t in (("input", input), ("weight", weight)):
        _checks.check_tensor(OP, name, t)
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"{OP}: expected 3D (unbatched) or 4D (batched) input, but got input of size: {list(input.shape)}"
        )
    if weight.dim() != 4:
        raise RuntimeError(f"{OP}: expected a 4D weight (out_channels, in_channels/groups, kH, kW), "
                           f"got weight of size {list(weight.shape)}")
    if not _checks.is_int_like(groups):
        raise TypeError(f"{OP}: groups must be an int, but got groups={groups!r} of type {type(groups).__name__}")
    groups = operator.index(groups)
    if groups <= 0:
        raise RuntimeError(f"{OP}: non-positive groups is not supported, got groups={groups!r}")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{OP}: given groups={groups}, expected weight to be divisible by {groups} at "
                           f"dimension 0, but got weight of size {list(weight.shape)}")
    if weight.shape[0] == 0:
        raise RuntimeError(f"{OP}: given groups={groups}, expected weight to be at least 1 at dimension 0, but got "
                           f"weight of size {list(weight.shape)}")
    channels = input.shape[-3]
    batch = input.shape[0] if input.dim() == 4 else 1
    if input.numel() == 0 and batch != 0 and channels != 0:
        raise RuntimeError(f"{OP}: only zero batch or zero channel inputs are supported, but got input of size "
                           f"{list(input.shape)}")
    if channels != weight.shape[1] * groups:
        raise RuntimeError(
            f"{OP}: given groups={groups}, weight of size {list(weight.shape)}, expected input{list(input.shape)} "
            f"to have {weight.shape[1] * groups} channels, but got {channels} channels instead"
        )
    if bias is not None:
        _checks.check_tensor(OP, "bias", bias)
        if bias.dim() != 1 or bias.numel() != weight.shape[0]:
            raise RuntimeError(f"{OP}: given weight of size {list(weight.shape)}, expected bias to be 1-dimensional "
                               f"with {weight.shape[0]} elements, but got bias of size {list(bias.shape)}")
    return groups


def _check_dtypes(input, weight, bias):
    # After autocast's cast, as torch checks them: a bf16 activation meets fp32 weights under autocast.
    _checks.check_same_dtype(OP, input, (("weight", weight), ("bias", bias)),
                             "input dtype {input} and {name} dtype {other} should be the same")
    if not input.is_floating_point():
        # torch convolves integer tensors too; these kernels compute in floating point only.
        raise NotImplementedError(f"{OP}: input of dtype {input.dtype} is not supported; tritonprop's {OP} "
                                  "takes floating-point tensors")


def _conv2d_kernels(input, weight, bias, stride, padding, dilation, groups, activation):
    geometry = reference.conv2d_geometry(input.shape, weight.shape, stride, padding, dilation)
    # The kernels take the top/left padding; bottom/right follow from the output size.
    pad_top, _, pad_left, _ = geometry.padding
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    if x.shape[1] == 0:
        # torch's answer for an input with no channels: an output with no channels either (not the
        # weight's out_channels), whose gradients are zero, dbias included. Each sum below is of an
        # empty tensor except the bias's, whose gradient the zero factor makes zero.
        zero = x.sum() * 0 + weight.sum() * 0 + (bias.sum() * 0 if bias is not None else 0)
        y = zero.expand(x.shape[0], 0, *geometry.output_size)
        return y.squeeze(0) if unbatched else y
    y = call(conv2d_op, x, weight, bias, list(geometry.stride), [pad_top, pad_left], list(geometry.dilation),
             groups, list(geometry.output_size), activation)[0]
    return y.squeeze(0) if unbatched else y


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
    """`torch.nn.functional.conv2d`, computed by Triton kernels; optionally ``activation(conv + bias)``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: activation must be one of None, 'relu', 'gelu', got {activation!r}")
    groups = _validate(input, weight, bias, groups)
    stride = _int_pair("stride", stride)
    dilation = _int_pair("dilation", dilation)
    if not isinstance(padding, str):
        padding = _int_pair("padding", padding)
    geometry = (stride, padding, dilation, groups)
    return dispatch(OP, dict(input=input, weight=weight, bias=bias), check_cast=_check_dtypes,
                    kernels=lambda input, weight, bias: _conv2d_kernels(input, weight, bias, *geometry, activation),
                    reference=lambda naive, input, weight, bias: naive(input, weight, bias, *geometry,
                                                                       activation=activation))


class Conv2d(torch.nn.Conv2d):
    """Drop-in `torch.nn.Conv2d` (only padding_mode='zeros'), with an optional fused ``activation``."""

    # The class default is what `ops.convert` gives a converted torch.nn.Conv2d.
    activation = None

    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Conv2d: activation must be one of None, 'relu', 'gelu', got {activation!r}")
        self.activation = activation

    def _check_supported(self):
        """NotImplementedError for a configuration these kernels do not compute (`ops.convert` then
        leaves a torch.nn.Conv2d as it is, with this message as the reason)."""
        if self.padding_mode != "zeros":
            raise NotImplementedError(f"tritonprop Conv2d: padding_mode={self.padding_mode!r} is not implemented; "
                                      "only 'zeros' is")

    def forward(self, input):
        # torch reads padding_mode at every forward, so a mode set after construction counts too.
        self._check_supported()
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                      activation=self.activation)

    def extra_repr(self):
        text = super().extra_repr()
        return f"{text}, activation={self.activation!r}" if self.activation else text


def fuse_conv_bn_eval(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d, *, activation=None) -> Conv2d:
    """A `Conv2d` equal to ``bn(conv(x))`` with `bn` in eval mode, BN folded into weight and bias.

    With scale = gamma / sqrt(running_var + eps):  w' = w * scale (per output channel),
    b' = (b - running_mean) * scale + beta. ``activation`` ('relu' or 'gelu') is fused after
    the folded BN, so conv + BN + ReLU becomes one kernel.
    """
    if getattr(conv, "activation", None):
        raise ValueError("fuse_conv_bn_eval: conv applies an activation before bn, which cannot be folded")
    if conv.training or bn.training:
        raise ValueError("fuse_conv_bn_eval: conv and bn must be in eval mode (call .eval() first)")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fuse_conv_bn_eval: bn must track running statistics")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"fuse_conv_bn_eval: bn has {bn.num_features} features, conv has {conv.out_channels} "
                         "output channels")
    fused = Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                   conv.groups, bias=True, padding_mode=conv.padding_mode, device=conv.weight.device,
                   dtype=conv.weight.dtype, activation=activation).eval()
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        shift = bn.bias.double() if bn.bias is not None else torch.zeros_like(scale)
        fused.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean.double()) * scale + shift)
    return fused
