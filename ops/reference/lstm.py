"""The LSTM unrolled in Python, with autograd doing BPTT: the oracle for the gated recurrences.

One step (the cell), in torch's gate order i, f, g, o (rows of W_ih and W_hh in four blocks of H):

    a = x W_ih^T + b_ih + h W_hh^T + b_hh          (B, 4H)
    i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
    c' = f * c + i * g
    h' = o * tanh(c')

The cell state c is carried by a sum, not squashed through a weight matrix at every step: where
f stays near 1 the gradient dL/dc passes back through many steps almost unchanged
(lstm_numpy.py derives the backward by hand). There is no hand-written backward here; autograd
records every step. The cell takes the arguments of torch.lstm_cell; `lstm_layer` is one
direction of one layer, as the kernels will run it.
"""
from __future__ import annotations

import torch

from tritonprop.ops.reference.rnn import sequence


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """torch.lstm_cell: input (B, I), hx = (h, c) each (B, H). Returns (h', c')."""
    h, c = hx
    a = input @ w_ih.t() + h @ w_hh.t()
    if b_ih is not None:
        a = a + b_ih + b_hh
    a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None):
    """One direction of one layer: x (T, B, I) -> (outputs (T, B, H), (h_n, c_n)).

    With `lengths` (B,), steps t >= lengths[b] leave both states of sequence b as they are.
    """
    T = x.shape[0]
    h, c = h0, c0
    outputs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new, c_new = lstm_cell(x[t], (h, c), w_ih, w_hh, b_ih, b_hh)
        if lengths is not None:
            valid = (t < lengths).unsqueeze(1)
            h_new, c_new = torch.where(valid, h_new, h), torch.where(valid, c_new, c)
        h, c = h_new, c_new
        outputs[t] = h
    return torch.stack(outputs), (h, c)


def lstm(input, hx, weights, *, num_layers=1, bias=True, batch_first=False, dropout=0.0, training=True,
         bidirectional=False):
    """torch.nn.LSTM's forward as a Python loop: hx = (h0, c0) or None; returns (output, (h_n, c_n))."""
    def layer(x, states, w_ih, w_hh, b_ih, b_hh, reverse, lengths):
        return lstm_layer(x, *states, w_ih, w_hh, b_ih, b_hh, reverse=reverse, lengths=lengths)

    return sequence(layer, input, tuple(hx) if hx is not None else None, weights, num_layers=num_layers, bias=bias,
                    batch_first=batch_first, dropout=dropout, training=training, bidirectional=bidirectional,
                    state_count=2)
