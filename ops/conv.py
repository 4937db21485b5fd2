"""2-D convolution: the autograd.Function, `conv2d` with F.conv2d's signature, `Conv2d`, and BN folding.

`conv2d` and `Conv2d` also take a keyword-only ``activation`` (None, 'relu' or 'gelu'): bias and
activation are then applied in the forward kernel's epilogue, and the backward differentiates
through them.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from tritonprop import backend
from tritonprop.kernels import conv2d as K
from tritonprop.ops import _checks
from tritonprop.ops._autocast import cast_to_lower_precision
from tritonprop.ops.reference import conv2d as reference

OP = "conv2d"
ACTIVATIONS = (None, "relu", "gelu")


class Conv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, output_size, activation):
        y, saved = K.forward(x, weight, bias, stride, padding, dilation, groups, output_size, activation)
        ctx.save_for_backward(x, weight, saved)
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.activation = activation
        ctx.has_bias = bias is not None
        ctx.input_layout = K.output_layout(x, x)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, saved = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        dz = K.activation_backward(dy, saved, ctx.activation) if ctx.activation else dy
        dx = dweight = dbias = None
        if need_input:
            dx = K.backward_input(dz, weight, x.shape, stride, padding, dilation, groups, ctx.input_layout)
        if need_weight or (need_bias and ctx.has_bias):
            dweight, dbias = K.backward_weight(dz, x, weight, stride, padding, dilation, groups,
                                               need_weight=need_weight, need_bias=need_bias and ctx.has_bias)
        return dx, dweight, dbias, None, None, None, None, None, None


def _validate(input, weight, bias, groups):
    for name, t in (("input", input), ("weight", weight)):
        _checks.check_tensor(OP, name, t)
        _checks.check_floating(OP, name, t)
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"{OP}: expected 3D (unbatched) or 4D (batched) input, but got input of size: {list(input.shape)}"
        )
    if weight.dim() != 4:
        raise RuntimeError(f"{OP}: expected a 4D weight (out_channels, in_channels/groups, kH, kW), "
                           f"got weight of size {list(weight.shape)}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        raise RuntimeError(f"{OP}: non-positive groups is not supported, got groups={groups!r}")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{OP}: given groups={groups}, expected weight to be divisible by {groups} at "
                           f"dimension 0, but got weight of size {list(weight.shape)}")
    channels = input.shape[-3]
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


def _check_dtypes(input, weight, bias):
    # After autocast's cast, as torch checks them: a bf16 activation meets fp32 weights under autocast.
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{OP}: input dtype {input.dtype} and {name} dtype {t.dtype} should be the same")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
    """`torch.nn.functional.conv2d`, computed by Triton kernels; optionally ``activation(conv + bias)``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: activation must be one of None, 'relu', 'gelu', got {activation!r}")
    _validate(input, weight, bias, groups)
    input, weight, bias = cast_to_lower_precision(input.device.type, [input, weight, bias])
    _check_dtypes(input, weight, bias)
    if backend.use_reference():
        return reference.conv2d_unfold(input, weight, bias, stride, padding, dilation, groups, activation=activation)
    backend.check_devices(OP, input=input, weight=weight, bias=bias)
    geometry = reference.conv2d_geometry(input.shape, weight.shape, stride, padding, dilation)
    # The kernels take the top/left padding; bottom/right follow from the output size.
    pad_top, _, pad_left, _ = geometry.padding
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    with torch.autocast(input.device.type, enabled=False):
        y = Conv2dFn.apply(x, weight, bias, geometry.stride, (pad_top, pad_left), geometry.dilation, groups,
                           geometry.output_size, activation)
    return y.squeeze(0) if unbatched else y


class Conv2d(torch.nn.Conv2d):
    """Drop-in `torch.nn.Conv2d` (only padding_mode='zeros'), with an optional fused ``activation``."""

    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise NotImplementedError(f"tritonprop Conv2d: padding_mode={self.padding_mode!r} is not implemented; "
                                      "only 'zeros' is")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Conv2d: activation must be one of None, 'relu', 'gelu', got {activation!r}")
        self.activation = activation

    def forward(self, input):
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
