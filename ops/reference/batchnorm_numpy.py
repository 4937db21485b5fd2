"""Batch norm in numpy, with the backward derived by hand (docs/batchnorm.md walks through it).

Per channel, over the m = N * (spatial size) values x_i of that channel:

    mu    = (1/m) sum_i x_i
    var   = (1/m) sum_i (x_i - mu)^2
    xhat  = (x_i - mu) / sqrt(var + eps)
    y_i   = w * xhat_i + b

Backward, with g_i = dL/dy_i:

    dL/db     = sum_i g_i
    dL/dw     = sum_i g_i * xhat_i
    dL/dx_i   = (w / sqrt(var + eps)) * (g_i - mean_j(g_j) - xhat_i * mean_j(g_j * xhat_j))

The second and third terms of dL/dx are the paths through mu and through var. In eval mode mu
and var are the running statistics (constants), so only the first term remains.
"""
from __future__ import annotations

import numpy as np


def _axes(x):
    return (0, *range(2, x.ndim))


def _per_channel(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm_forward(x, weight, bias, eps=1e-5, running_mean=None, running_var=None, training=True):
    """Returns ``(y, cache)``; ``cache`` holds what the backward needs."""
    axes = _axes(x)
    if training:
        mu = x.mean(axis=axes)
        var = ((x - _per_channel(mu, x)) ** 2).mean(axis=axes)
    else:
        mu, var = running_mean, running_var
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - _per_channel(mu, x)) * _per_channel(invstd, x)
    y = xhat * _per_channel(weight, x) + _per_channel(bias, x)
    return y, (xhat, invstd, weight, training)


def batch_norm_backward(dy, cache):
    """Returns ``(dx, dweight, dbias)`` from the upstream gradient ``dy``."""
    xhat, invstd, weight, training = cache
    axes = _axes(dy)
    dbias = dy.sum(axis=axes)
    dweight = (dy * xhat).sum(axis=axes)
    scale = _per_channel(weight * invstd, dy)
    if not training:
        return dy * scale, dweight, dbias
    m = dy.size // dy.shape[1]
    dx = scale * (dy - _per_channel(dbias / m, dy) - xhat * _per_channel(dweight / m, dy))
    return dx, dweight, dbias
