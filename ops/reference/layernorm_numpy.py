"""Layer norm in numpy, with the backward derived by hand (docs/layernorm.md walks through it).

Each row x_1 .. x_N (the trailing normalized dims, flattened) is normalized on its own:

    mu    = (1/N) sum_j x_j
    var   = (1/N) sum_j (x_j - mu)^2
    r     = 1 / sqrt(var + eps)
    xhat  = (x_j - mu) * r
    y_j   = w_j * xhat_j + b_j

Weight and bias are per column and shared by every row. Backward, with g_j = dL/dy_j of one row:

    dL/db_j   = sum over rows of g_j
    dL/dw_j   = sum over rows of g_j * xhat_j
    dL/dx_j   = r * (w_j g_j - mean_k(w_k g_k) - xhat_j * mean_k(w_k g_k xhat_k))

dL/dx is batch norm's formula with the roles of rows and columns swapped, except that the
weight is now per column, inside the means: with h_j = w_j g_j = dL/dxhat_j, the direct path
gives r h_j, the path through mu gives -r mean(h), and the path through var gives
-r xhat_j mean(h xhat).
"""
from __future__ import annotations

import numpy as np


def _rows(a, normalized_ndim):
    """`a` as a 2-D (rows, N) array."""
    return a.reshape(-1, int(np.prod(a.shape[a.ndim - normalized_ndim:])))


def layer_norm_forward(x, weight, bias, eps=1e-5):
    """Normalizes over the last ``weight.ndim`` dims. Returns ``(y, cache)``, the cache for the backward."""
    ndim = weight.ndim
    rows = _rows(x, ndim)
    mu = rows.mean(axis=1, keepdims=True)
    var = ((rows - mu) ** 2).mean(axis=1, keepdims=True)
    r = 1.0 / np.sqrt(var + eps)
    xhat = (rows - mu) * r
    y = xhat * weight.reshape(-1) + bias.reshape(-1)
    return y.reshape(x.shape), (xhat, r, weight)


def layer_norm_backward(dy, cache):
    """Returns ``(dx, dweight, dbias)`` from the upstream gradient ``dy``."""
    xhat, r, weight = cache
    g = _rows(dy, weight.ndim)
    dbias = g.sum(axis=0)
    dweight = (g * xhat).sum(axis=0)
    h = g * weight.reshape(-1)  # dL/dxhat
    dx = r * (h - h.mean(axis=1, keepdims=True) - xhat * (h * xhat).mean(axis=1, keepdims=True))
    return dx.reshape(dy.shape), dweight.reshape(weight.shape), dbias.reshape(weight.shape)
