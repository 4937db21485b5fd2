"""Batch normalization: the custom ops with their autograd, `batch_norm` with F.batch_norm's signature, and the modules.

The modules subclass torch's, so construction, parameters, buffers and `state_dict` are torch's
own; only the forward is ours. Every module and the functional take a keyword-only
``fuse_relu`` that applies ReLU inside the same kernel (and its mask inside the backward).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from tritonprop.kernels import batchnorm as K
from tritonprop.kernels.elementwise import has_internal_overlap
from tritonprop.ops import _checks
from tritonprop.ops._library import absent, call, differentiable, dispatch, kernel_op, not_differentiable, wanted
from tritonprop.ops.activations import activation_grad

OP = "batch_norm"


@kernel_op("batch_norm")
def batch_norm_op(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                  running_var: Optional[Tensor], training: bool, momentum: float, eps: float, fuse_relu: bool
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, invstd, new running_mean, new running_var).

    The kernels update running statistics in place, but an op that writes its input cannot have
    autograd registered, so the kernels update copies, returned here (`absent` unless training
    with running statistics), and `batch_norm` copies them back into the buffers. The copies are
    one value per channel.
    """
    update = training and running_mean is not None
    if update:
        running_mean, running_var = running_mean.clone(), running_var.clone()
    y, mean, invstd = K.forward(input, weight, bias, running_mean, running_var, training, momentum, eps, fuse_relu)
    if not update:
        return y, mean, invstd, absent(mean), absent(mean)
    return y, mean, invstd, running_mean, running_var


@kernel_op("batch_norm_backward")
def batch_norm_backward_op(dy: Tensor, input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                           invstd: Tensor, training: bool, fuse_relu: bool, needs: list[bool]
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias), each `absent` unless its ``needs`` entry is set."""
    grads = K.backward(dy, input, weight, bias, mean, invstd, training, fuse_relu, need_input=needs[0],
                       need_weight=needs[1], need_bias=needs[2])
    return tuple(g if need and g is not None else absent(input) for g, need in zip(grads, needs))


def _setup_context(ctx, inputs, output):
    input, weight, bias, running_mean, running_var, training, momentum, eps, fuse_relu = inputs
    _, mean, invstd, *running = output
    ctx.mark_non_differentiable(mean, invstd, *running)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, weight, bias, mean, invstd)
    ctx.training = training
    ctx.eps = eps
    ctx.fuse_relu = fuse_relu


def _backward(ctx, dy, *_statistics):
    if dy is None:  # y did not reach the loss (grads are not materialized)
        return (None,) * 9
    input, weight, bias, mean, invstd = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
             bias is not None and ctx.needs_input_grad[2]]
    # Grad mode is on inside backward exactly when the caller asked for a graph of the gradient.
    if torch.is_grad_enabled():
        grads = _differentiable_backward(ctx, dy, input, weight, bias, mean, invstd)
    else:
        grads = call(batch_norm_backward_op, dy, input, weight, bias, mean, invstd, ctx.training, ctx.fuse_relu,
                     needs)
    return (*wanted(grads, needs), None, None, None, None, None, None)


differentiable(batch_norm_op, setup_context=_setup_context, backward=_backward)
not_differentiable(batch_norm_backward_op, explanation="the kernel's gradient is not differentiable; batch_norm's "
                   "gradient under create_graph=True is built from differentiable ops instead")


def _differentiable_backward(ctx, dy, input, weight, bias, mean, invstd):
    """(dx, dweight, dbias) in torch ops that autograd can differentiate again, for create_graph=True.

    In training the batch statistics depend on the input, so they are recomputed from the saved
    input (the kernel's mean and invstd carry no graph). In eval they are the running statistics,
    constants, so the kernel's are used. The formulas are those of the backward kernels, in the
    accumulator dtype; with ``fuse_relu`` the ReLU mask comes from the recomputed pre-activation.
    """
    acc = mean.dtype
    reduce_dims = [0, *range(2, input.dim())]
    channel_shape = [1, -1] + [1] * (input.dim() - 2)
    x = input.to(acc)
    if ctx.training:
        mean = x.mean(reduce_dims, keepdim=True)
        invstd = torch.rsqrt((x - mean).square().mean(reduce_dims, keepdim=True) + ctx.eps)
    else:
        mean, invstd = mean.view(channel_shape), invstd.view(channel_shape)
    xhat = (x - mean) * invstd
    scale = weight.to(acc).view(channel_shape) if weight is not None else None
    g = dy.to(acc)
    if ctx.fuse_relu:
        z = xhat * scale if scale is not None else xhat
        z = z + bias.to(acc).view(channel_shape) if bias is not None else z
        g = activation_grad(g, z, "relu")
    dbias = g.sum(reduce_dims).to(bias.dtype) if bias is not None else None
    dweight = (g * xhat).sum(reduce_dims).to(weight.dtype) if weight is not None else None
    if ctx.training:
        g = g - g.mean(reduce_dims, keepdim=True) - xhat * (g * xhat).mean(reduce_dims, keepdim=True)
    dx = g * invstd
    dx = dx * scale if scale is not None else dx
    return dx.to(input.dtype), dweight, dbias


def _validate(input, running_mean, running_var, weight, bias, training):
    """torch's checks of the tensor arguments, with its exception types; returns the channel count."""
    _checks.check_tensor(OP, "input", input)
    if not input.is_floating_point():
        raise NotImplementedError(f"{OP}: input of dtype {input.dtype} is not supported; tritonprop's {OP} "
                                  "takes floating-point tensors, as torch's does")
    # torch counts no channels in an input of fewer than 2 dims: an empty one is normalized, a
    # non-empty one refused below, after the parameter checks (which are torch's order).
    channels = input.shape[1] if input.dim() > 1 else 0
    if training:
        values_per_channel = math.prod(input.shape[:1]) * math.prod(input.shape[2:])
        if values_per_channel == 1 and input.dim() > 0:
            # The same error, and type, as torch.nn.functional.batch_norm.
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    elif running_mean is None or running_var is None:
        missing = "running_mean" if running_mean is None else "running_var"
        raise RuntimeError(f"{OP}: {missing} must be defined in evaluation mode")
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        _checks.check_tensor(OP, name, t)
        _checks.check_param_dtype(OP, name, t, input.dtype)
        _checks.check_numel(OP, name, t, channels, "one per channel of input")
    if input.dim() < 2 and input.numel():
        raise IndexError(f"{OP}: input must have at least 2 dims (N, C, ...), got shape {tuple(input.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{OP}: running_mean and running_var must both be given or both be None")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is None:
            continue
        if t.dim() != 1:
            raise RuntimeError(f"{OP}: {name} must be 1-dimensional, got shape {tuple(t.shape)}")
        if t.requires_grad:
            raise RuntimeError(f"{OP} is not differentiable with respect to {name}; it must not require grad")
        if training and has_internal_overlap(t):
            # torch writes such a buffer anyway, leaving whichever channel's update landed last in
            # the shared element; that is no running statistic, so it is refused instead.
            raise RuntimeError(
                f"{OP}: {name} (shape {tuple(t.shape)}, strides {t.stride()}) has more than one element in a "
                "single memory location, so the running statistics cannot be updated in place; clone() it first"
            )
    return channels


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, *, fuse_relu=False):
    """`torch.nn.functional.batch_norm`, computed by Triton kernels.

    ``fuse_relu=True`` returns ``relu(batch_norm(...))`` from the same kernel.
    """
    if not isinstance(training, bool):
        raise TypeError(f"{OP}: training must be bool, not {type(training).__name__}")
    momentum = _checks.real_number(OP, "momentum", momentum)
    eps = _checks.real_number(OP, "eps", eps)
    if training and eps <= 0:
        raise ValueError(f"{OP}: eps must be positive during training, but got {eps}")
    if eps < 0:
        raise ValueError(f"{OP}: eps must be non-negative, but got {eps}")
    channels = _validate(input, running_mean, running_var, weight, bias, training)

    def kernels(input, running_mean, running_var, weight, bias):
        # torch takes any parameter shape with one element per channel; the kernels take a vector.
        weight = weight.reshape(channels) if weight is not None else None
        bias = bias.reshape(channels) if bias is not None else None
        x = input if input.dim() > 1 else input.reshape(0, 0)
        y, _, _, new_mean, new_var = call(batch_norm_op, x, weight, bias, running_mean, running_var, training,
                                          momentum, eps, bool(fuse_relu))
        if training and running_mean is not None:
            with torch.no_grad():
                running_mean.copy_(new_mean)
                running_var.copy_(new_var)
        return y if input.dim() > 1 else y.reshape(input.shape)

    return dispatch(OP, dict(input=input, running_mean=running_mean, running_var=running_var, weight=weight,
                             bias=bias), kernels=kernels,
                    reference=lambda naive, **tensors: naive(**tensors, training=training, momentum=momentum,
                                                             eps=eps, fuse_relu=fuse_relu))


class _TritonBatchNorm:
    """The forward of torch's _BatchNorm (momentum, cumulative averaging, eval fallback), on our op."""

    # The class default is what `ops.convert` gives a converted torch.nn.BatchNorm.
    fuse_relu = False

    def __init__(self, *args, fuse_relu: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fuse_relu = fuse_relu

    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            # momentum=None means a cumulative moving average over all batches seen.
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_running = not self.training or self.track_running_stats
        return batch_norm(
            input,
            self.running_mean if keep_running else None,
            self.running_var if keep_running else None,
            self.weight, self.bias, use_batch_stats, factor, self.eps, fuse_relu=self.fuse_relu,
        )

    def extra_repr(self):
        text = super().extra_repr()
        return text + ", fuse_relu=True" if self.fuse_relu else text


class BatchNorm1d(_TritonBatchNorm, torch.nn.BatchNorm1d):
    """Drop-in `torch.nn.BatchNorm1d` on (N, C) or (N, C, L) input."""


class BatchNorm2d(_TritonBatchNorm, torch.nn.BatchNorm2d):
    """Drop-in `torch.nn.BatchNorm2d` on (N, C, H, W) input, NCHW or channels_last."""


class BatchNorm3d(_TritonBatchNorm, torch.nn.BatchNorm3d):
    """Drop-in `torch.nn.BatchNorm3d` on (N, C, D, H, W) input."""
