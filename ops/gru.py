"""GRU: the `gru_cell` and `gru` functionals and the `GRUCell` and `GRU` modules.

    gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None)
        torch.gru_cell, one step; gates in torch's order r, z, n, with b_hn inside the reset
        product: n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)).
    gru(input, hx, weights, *, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        training=True, bidirectional=False)
        torch.nn.GRU's forward: `weights` in torch's `_flat_weights` order, `hx` (num_layers * D,
        B, H) or None for zeros. Returns ``(output, h_n)``.

Both run on the recurrence engine (kernels/recurrence.py) through the `recurrent_layer` op of
ops/rnn.py: the cell is a sequence of one step, so it runs the layers' fused gate epilogue.
"""
from __future__ import annotations

import torch

from tritonprop.kernels import recurrence
from tritonprop.ops._library import dispatch
from tritonprop.ops.rnn import TraceableRecurrent, both_biases, gated_cell, recurrent_sequence, validate_cell

OP = "gru"
OP_CELL = "gru_cell"
GATES = recurrence.GATES[recurrence.GRU]


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step, as torch.gru_cell (and torch.nn.GRUCell's forward). input (B, I) or (I,); hx
    of the matching shape, or None for zeros. Returns h'."""
    validate_cell(OP_CELL, input, [("hx", hx)], w_ih, w_hh, b_ih, b_hh, gates=GATES)
    b_ih, b_hh = both_biases(b_ih, b_hh)

    def kernels(input, hx, w_ih, w_hh, b_ih, b_hh):
        return gated_cell("gru", input, None if hx is None else (hx,), w_ih, w_hh, b_ih, b_hh)[0]

    def reference(naive, input, hx, **weights):
        if hx is None:
            hx = input.new_zeros((*input.shape[:-1], weights["w_hh"].shape[1]))
        return naive(input, hx, **weights)

    return dispatch(OP_CELL, dict(input=input, hx=hx, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), kernels=kernels,
                    reference=reference)


def gru(input, hx, weights, *, num_layers=1, bias=True, batch_first=False, dropout=0.0, training=True,
        bidirectional=False):
    """The whole GRU, as torch.nn.GRU's forward; see the module docstring."""
    output, (h_n,) = recurrent_sequence(OP, "gru", input, [("hx", hx)], weights, num_layers=num_layers, bias=bias,
                                        batch_first=batch_first, dropout=dropout, training=training,
                                        bidirectional=bidirectional)
    return output, h_n


class GRUCell(torch.nn.GRUCell):
    """Drop-in `torch.nn.GRUCell`."""

    def forward(self, input, hx=None):
        return gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRU(TraceableRecurrent, torch.nn.GRU):
    """Drop-in `torch.nn.GRU`: every constructor option, PackedSequence input, torch's state_dict."""

    def forward(self, input, hx=None):
        return gru(input, hx, self._weights(), **self._sequence_options())
