"""Batch norm by its formula, in plain torch autograd: the oracle for the Triton kernels.

    mean = E[x],  var = E[(x - mean)^2]   (over every dim but the channel dim)
    y    = (x - mean) / sqrt(var + eps) * weight + bias

Low-precision inputs are computed in float32 and cast back, as torch's own kernels do.
"""
from __future__ import annotations

import torch


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, *, fuse_relu=False):
    dims = [0, *range(2, input.dim())]
    shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    x = input.to(compute)

    if training:
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        if running_mean is not None:
            count = input.numel() // input.shape[1]
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.detach().to(running_mean.dtype))
                unbiased = var.detach() * count / max(count - 1, 1)
                running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
    else:
        mean = running_mean.to(compute)
        var = running_var.to(compute)

    y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.to(compute).reshape(shape)
    if bias is not None:
        y = y + bias.to(compute).reshape(shape)
    if fuse_relu:
        y = torch.relu(y)
    return y.to(input.dtype)
