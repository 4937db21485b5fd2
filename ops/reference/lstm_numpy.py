"""One LSTM layer (one direction) in numpy, with backpropagation through time derived by hand.

Forward, for t = 0 .. T-1 from (h_{-1}, c_{-1}) = (h0, c0), gates in torch's order i, f, g, o:

    a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh = [a_i, a_f, a_g, a_o]
    i = s(a_i)  f = s(a_f)  g = tanh(a_g)  o = s(a_o)         s = sigmoid
    c_t = f * c_{t-1} + i * g        h_t = o * tanh(c_t)        y_t = h_t

Backward, from g_t = dL/dy_t, dL/dh_n and dL/dc_n. h_t reaches the loss through y_t and through
a_{t+1}; c_t through h_t and through c_{t+1} = f_{t+1} * c_t + ..., so for t = T-1 down to 0:

    dh_t = g_t + da_{t+1} W_hh                      (da_T := 0; g_{T-1} gets dL/dh_n added)
    dc_t = dc_{t+1} * f_{t+1} + dh_t * o * (1 - tanh(c_t)^2)     (dc_T * f_T := dL/dc_n)
    do = dh_t * tanh(c_t)     di = dc_t * g     dg = dc_t * i     df = dc_t * c_{t-1}
    da_t = [di * i (1 - i),  df * f (1 - f),  dg * (1 - g^2),  do * o (1 - o)]

The weights are shared by every step, so their gradients sum over steps, as for the Elman RNN:

    dW_ih = sum_t da_t^T x_t    dW_hh = sum_t da_t^T h_{t-1}    db_ih = db_hh = sum_t sum_b da_t
    dx_t = da_t W_ih            dh0 = da_0 W_hh                  dc0 = dc_0 * f_0

The cell state's own path, dc_{t-1} = dc_t * f_t, multiplies by the forget gate and by no weight
matrix: with f near 1 the gradient of a distant step neither vanishes nor explodes through it.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """x (T, B, I), h0 and c0 (B, H). Returns ``(y, h_n, c_n, cache)`` with y (T, B, H)."""
    T, H = x.shape[0], w_hh.shape[1]
    y = np.empty((T, h0.shape[0], H), dtype=x.dtype)
    cells = np.empty_like(y)
    gates = np.empty((T, h0.shape[0], 4 * H), dtype=x.dtype)  # i, f, g, o after their squashing
    h, c = h0, c0
    for t in range(T):
        a = x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        cells[t], y[t] = c, h
    return y, h, c, (x, h0, c0, w_ih, w_hh, y, cells, gates)


def lstm_backward(dy, dh_n, dc_n, cache):
    """Returns ``(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)`` from dy (T, B, H), dh_n and dc_n (B, H)."""
    x, h0, c0, w_ih, w_hh, y, cells, gates = cache
    T, H = x.shape[0], w_hh.shape[1]
    da = np.empty_like(gates)
    dh, dc = dh_n, dc_n  # what reaches h_t from step t+1 (and from h_n), and c_t from c_{t+1} (and c_n)
    for t in range(T - 1, -1, -1):
        i, f, g, o = (gates[t][:, k * H:(k + 1) * H] for k in range(4))
        c_prev = cells[t - 1] if t > 0 else c0
        tanh_c = np.tanh(cells[t])
        dh = dy[t] + dh
        dc = dc + dh * o * (1.0 - tanh_c ** 2)
        da[t] = np.concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g ** 2),
                                dh * tanh_c * o * (1.0 - o)], axis=1)
        dh = da[t] @ w_hh
        dc = dc * f
    h_prev = np.concatenate([h0[None], y[:-1]])
    dx = da @ w_ih
    dw_ih = np.einsum("tbg,tbi->gi", da, x)
    dw_hh = np.einsum("tbg,tbk->gk", da, h_prev)
    db = da.sum(axis=(0, 1))
    return dx, dh, dc, dw_ih, dw_hh, db, db.copy()
