"""One GRU layer (one direction) in numpy, with backpropagation through time derived by hand.

Forward, for t = 0 .. T-1 from h_{-1} = h0, gates in torch's order r, z, n, with b_hn inside the
reset product as torch places it:

    gi = x_t W_ih^T + b_ih = [gi_r, gi_z, gi_n]     gh = h_{t-1} W_hh^T + b_hh = [gh_r, gh_z, gh_n]
    r = s(gi_r + gh_r)    z = s(gi_z + gh_z)    n = tanh(gi_n + r * gh_n)      s = sigmoid
    h_t = (1 - z) * n + z * h_{t-1}                                            y_t = h_t

Backward, from g_t = dL/dy_t and dL/dh_n, for t = T-1 down to 0, with dh_t the whole gradient
reaching h_t (from y_t, from h_n at t = T-1, and from step t+1):

    dn = dh_t * (1 - z)      dz = dh_t * (h_{t-1} - n)
    dan = dn * (1 - n^2)     (the gradient of n's pre-activation: of gi_n, and of r * gh_n)
    dr = dan * gh_n
    dgi = [dr * r (1 - r),  dz * z (1 - z),  dan]          the input side's pre-activations
    dgh = [dr * r (1 - r),  dz * z (1 - z),  dan * r]      the hidden side's: gh_n enters times r
    dh_{t-1} = dh_{t-1} (from y_{t-1}) + dh_t * z + dgh W_hh

and over all steps at once:

    dW_ih = sum_t dgi_t^T x_t    dW_hh = sum_t dgh_t^T h_{t-1}    db_ih = sum dgi    db_hh = sum dgh
    dx_t = dgi_t W_ih

The direct path dh_{t-1} += dh_t * z multiplies by the update gate and by no weight matrix: with
z near 1 a distant step's gradient passes through almost unchanged.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh):
    """x (T, B, I), h0 (B, H). Returns ``(y, h_n, cache)`` with y (T, B, H)."""
    T, H = x.shape[0], w_hh.shape[1]
    y = np.empty((T, h0.shape[0], H), dtype=x.dtype)
    saved = np.empty((T, h0.shape[0], 4 * H), dtype=x.dtype)  # r, z, n and gh_n per step
    h = h0
    for t in range(T):
        gi = x[t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        h = (1.0 - z) * n + z * h
        saved[t] = np.concatenate([r, z, n, gh[:, 2 * H:]], axis=1)
        y[t] = h
    return y, h, (x, h0, w_ih, w_hh, y, saved)


def gru_backward(dy, dh_n, cache):
    """Returns ``(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)`` from dy (T, B, H) and dh_n (B, H)."""
    x, h0, w_ih, w_hh, y, saved = cache
    T, H = x.shape[0], w_hh.shape[1]
    dgi = np.empty((T, h0.shape[0], 3 * H), dtype=x.dtype)
    dgh = np.empty_like(dgi)
    dh = dh_n
    for t in range(T - 1, -1, -1):
        r, z, n, gh_n = (saved[t][:, k * H:(k + 1) * H] for k in range(4))
        h_prev = y[t - 1] if t > 0 else h0
        dh = dy[t] + dh
        dan = dh * (1.0 - z) * (1.0 - n ** 2)
        dar = dan * gh_n * r * (1.0 - r)
        daz = dh * (h_prev - n) * z * (1.0 - z)
        dgi[t] = np.concatenate([dar, daz, dan], axis=1)
        dgh[t] = np.concatenate([dar, daz, dan * r], axis=1)
        dh = dh * z + dgh[t] @ w_hh
    h_prev_all = np.concatenate([h0[None], y[:-1]])
    dx = dgi @ w_ih
    dw_ih = np.einsum("tbg,tbi->gi", dgi, x)
    dw_hh = np.einsum("tbg,tbk->gk", dgh, h_prev_all)
    return dx, dh, dw_ih, dw_hh, dgi.sum(axis=(0, 1)), dgh.sum(axis=(0, 1))
