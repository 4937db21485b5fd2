"""One RNN layer (one direction) in numpy, with backpropagation through time derived by hand.

Forward, for t = 0 .. T-1 with h_{-1} = h0 (docs/rnn_bptt.md walks through it):

    z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
    h_t = act(z_t)                          y_t = h_t,  h_n = h_{T-1}

Backward, from g_t = dL/dy_t and g_n = dL/dh_n. h_t reaches the loss through y_t and through
z_{t+1}, so the gradient flowing into h_t is

    dh_t = g_t + dz_{t+1} W_hh              (dz_T := 0, and g_{T-1} gets g_n added)
    dz_t = dh_t * act'(z_t)                 tanh' = 1 - h_t^2,  relu' = [h_t > 0]

run for t = T-1 down to 0, and then, because W_ih, W_hh and the biases are shared by every step,
their gradients sum over steps:

    dW_ih = sum_t dz_t^T x_t        dW_hh = sum_t dz_t^T h_{t-1}       db_ih = db_hh = sum_t sum_b dz_t
    dx_t  = dz_t W_ih               dh0   = dz_0 W_hh

Only the recurrence for dh_t is sequential; everything else is one matrix product over all steps
at once, which is how kernels/recurrence.py computes it.
"""
from __future__ import annotations

import numpy as np


def _act(z, nonlinearity):
    return np.tanh(z) if nonlinearity == "tanh" else np.maximum(z, 0.0)


def _act_grad(h, nonlinearity):
    """act'(z) written with the output h = act(z)."""
    return 1.0 - h * h if nonlinearity == "tanh" else (h > 0).astype(h.dtype)


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    """x (T, B, I), h0 (B, H). Returns ``(y, h_n, cache)`` with y (T, B, H)."""
    T = x.shape[0]
    y = np.empty((T, h0.shape[0], w_hh.shape[0]), dtype=x.dtype)
    h = h0
    for t in range(T):
        h = _act(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh, nonlinearity)
        y[t] = h
    return y, h, (x, h0, w_ih, w_hh, y, nonlinearity)


def rnn_backward(dy, dh_n, cache):
    """Returns ``(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)`` from dy = dL/dy (T, B, H) and dh_n = dL/dh_n (B, H)."""
    x, h0, w_ih, w_hh, y, nonlinearity = cache
    T = x.shape[0]
    dz = np.empty_like(y)
    dh = dh_n  # the gradient reaching h_t from later steps; at t = T-1 that is dh_n
    for t in range(T - 1, -1, -1):
        dz[t] = (dy[t] + dh) * _act_grad(y[t], nonlinearity)
        dh = dz[t] @ w_hh
    h_prev = np.concatenate([h0[None], y[:-1]])  # h_{t-1} for every t
    dx = dz @ w_ih
    dw_ih = np.einsum("tbh,tbi->hi", dz, x)
    dw_hh = np.einsum("tbh,tbk->hk", dz, h_prev)
    db = dz.sum(axis=(0, 1))
    return dx, dh, dw_ih, dw_hh, db, db.copy()
