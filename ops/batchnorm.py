"""Batch normalization: the autograd.Function, `batch_norm` with F.batch_norm's signature, and the modules.

The modules subclass torch's, so construction, parameters, buffers and `state_dict` are torch's
own; only the forward is ours. Every module and the functional take a keyword-only
``fuse_relu`` that applies ReLU inside the same kernel (and its mask inside the backward).
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from tritonprop import backend
from tritonprop.kernels import batchnorm as K
from tritonprop.ops import _checks
from tritonprop.ops.reference import batchnorm as reference

OP = "batch_norm"


class BatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, training, momentum, eps, fuse_relu):
        running = [running_mean, running_var]
        scratch = [r.contiguous() if r is not None else None for r in running]
        y, mean, invstd = K.forward(input, weight, bias, scratch[0], scratch[1], training, momentum, eps, fuse_relu)
        if training:
            # The kernel updated the contiguous copies of non-contiguous running stats in place.
            for r, s in zip(running, scratch):
                if r is not None and s.data_ptr() != r.data_ptr():
                    r.copy_(s)
        ctx.save_for_backward(input, weight, bias, mean, invstd)
        ctx.training = training
        ctx.fuse_relu = fuse_relu
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        input, weight, bias, mean, invstd = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        dx, dweight, dbias = K.backward(
            dy, input, weight, bias, mean, invstd, ctx.training, ctx.fuse_relu,
            need_input=need_input, need_weight=need_weight, need_bias=need_bias,
        )
        return dx, dweight, dbias, None, None, None, None, None, None


def _validate(input, running_mean, running_var, weight, bias, training):
    _checks.check_tensor(OP, "input", input)
    _checks.check_floating(OP, "input", input)
    if input.dim() < 2:
        raise ValueError(f"{OP}: input must have at least 2 dims (N, C, ...), got shape {tuple(input.shape)}")
    if training:
        values_per_channel = input.shape[0] * math.prod(input.shape[2:])
        if values_per_channel == 1:
            # The same error, and type, as torch.nn.functional.batch_norm.
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    elif running_mean is None or running_var is None:
        missing = "running_mean" if running_mean is None else "running_var"
        raise RuntimeError(f"{OP}: {missing} must be defined in evaluation mode")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        _checks.check_tensor(OP, name, t)
        _checks.check_param_dtype(OP, name, t, input.dtype)
        _checks.check_numel(OP, name, t, channels, "one per channel of input")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{OP}: running_mean and running_var must both be given or both be None")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and t.requires_grad:
            raise RuntimeError(f"{OP} is not differentiable with respect to {name}; it must not require grad")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, *, fuse_relu=False):
    """`torch.nn.functional.batch_norm`, computed by Triton kernels.

    ``fuse_relu=True`` returns ``relu(batch_norm(...))`` from the same kernel.
    """
    _validate(input, running_mean, running_var, weight, bias, training)
    if not isinstance(momentum, (int, float)) or isinstance(momentum, bool):
        raise TypeError(f"{OP}: momentum must be a float, not {type(momentum).__name__} (modules accept momentum=None)")
    if backend.use_reference():
        return reference.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps,
                                    fuse_relu=fuse_relu)
    backend.check_devices(OP, input=input, running_mean=running_mean, running_var=running_var,
                          weight=weight, bias=bias)
    if weight is not None:
        weight = weight.contiguous()
    if bias is not None:
        bias = bias.contiguous()
    return BatchNormFn.apply(input, weight, bias, running_mean, running_var, bool(training),
                             float(momentum), float(eps), bool(fuse_relu))


class _TritonBatchNorm:
    """The forward of torch's _BatchNorm (momentum, cumulative averaging, eval fallback), on our op."""

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
