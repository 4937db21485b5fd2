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


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """One direction of one layer: x (T, B, I) -> (outputs (T, B, H), h_n)."""
    T = x.shape[0]
    h = h0
    outputs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h = gru_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        outputs[t] = h
    return torch.stack(outputs), h
