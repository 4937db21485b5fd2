"""The GRU unrolled in Python, with autograd doing BPTT: the oracle for the gated recurrences.

One step (the cell), in torch's gate order r, z, n (rows of W_ih and W_hh in three blocks of H),
with torch's placement of b_hn inside the reset product:

    r  = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
    z  = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
    n  = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
    h' = (1 - z) * n + z * h

h' is a convex mix of the candidate n and the old state: where z stays near 1 the state, and the
gradient through it, pass from step to step almost unchanged (gru_numpy.py derives the backward
by hand). Autograd records every step here. The cell takes the arguments of torch.gru_cell;
`gru_layer` is one direction of one layer.
"""
from __future__ import annotations

import torch

from tritonprop.ops.reference.rnn import sequence


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """torch.gru_cell: input (B, I), hx (B, H). Returns h'."""
    gi = input @ w_ih.t()
    gh = hx @ w_hh.t()
    if b_ih is not None:
        gi = gi + b_ih
        gh = gh + b_hh
    gi_r, gi_z, gi_n = gi.chunk(3, dim=-1)
    gh_r, gh_z, gh_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(gi_r + gh_r)
    z = torch.sigmoid(gi_z + gh_z)
    n = torch.tanh(gi_n + r * gh_n)
    return (1 - z) * n + z * hx


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None):
    """One direction of one layer: x (T, B, I) -> (outputs (T, B, H), h_n).

    With `lengths` (B,), steps t >= lengths[b] leave the state of sequence b as it is.
    """
    T = x.shape[0]
    h = h0
    outputs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new = gru_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        if lengths is not None:
            h_new = torch.where((t < lengths).unsqueeze(1), h_new, h)
        h = h_new
        outputs[t] = h
    return torch.stack(outputs), h


def gru(input, hx, weights, *, num_layers=1, bias=True, batch_first=False, dropout=0.0, training=True,
        bidirectional=False):
    """torch.nn.GRU's forward as a Python loop: returns (output, h_n)."""
    def layer(x, states, w_ih, w_hh, b_ih, b_hh, reverse, lengths):
        out, h = gru_layer(x, states[0], w_ih, w_hh, b_ih, b_hh, reverse=reverse, lengths=lengths)
        return out, (h,)

    output, (h_n,) = sequence(layer, input, (hx,) if hx is not None else None, weights, num_layers=num_layers,
                              bias=bias, batch_first=batch_first, dropout=dropout, training=training,
                              bidirectional=bidirectional)
    return output, h_n
