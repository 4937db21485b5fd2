"""LSTM: the `lstm_cell` and `lstm` functionals and the `LSTMCell` and `LSTM` modules.

    lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None)
        torch.lstm_cell, one step: hx = (h, c); returns (h', c'). Gates in torch's order i, f, g, o.
    lstm(input, hx, weights, *, num_layers=1, bias=True, batch_first=False, dropout=0.0,
         training=True, bidirectional=False)
        torch.nn.LSTM's forward: `weights` in torch's `_flat_weights` order, `hx` = (h0, c0), each
        (num_layers * D, B, H), or None for zeros. Returns ``(output, (h_n, c_n))``.

Both run on the recurrence engine (kernels/recurrence.py) through the `recurrent_layer` op of
ops/rnn.py: the cell is a sequence of one step, so it runs the layers' fused gate epilogue.
"""
from __future__ import annotations

import torch

from tritonprop.kernels import recurrence
from tritonprop.ops._library import dispatch
from tritonprop.ops.rnn import TraceableRecurrent, both_biases, gated_cell, recurrent_sequence, validate_cell

OP = "lstm"
OP_CELL = "lstm_cell"
GATES = recurrence.GATES[recurrence.LSTM]


def _states(op, hx, error):
    """(h, c) from hx, which torch's LSTMs take as a pair or None; otherwise `error`, the type
    torch raises there (nn.LSTM fails indexing the states, torch.lstm_cell's argument parser
    with TypeError)."""
    if hx is None:
        return None, None
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise error(f"{op}: hx must be a tuple of two tensors (h, c), got {type(hx).__name__}"
                           + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""))
    return hx[0], hx[1]


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step, as torch.lstm_cell (and torch.nn.LSTMCell's forward). input (B, I) or (I,);
    hx = (h, c) of the matching shape, or None for zeros. Returns (h', c')."""
    h, c = _states(OP_CELL, hx, TypeError)
    validate_cell(OP_CELL, input, [("hx[0]", h), ("hx[1]", c)], w_ih, w_hh, b_ih, b_hh, gates=GATES)
    b_ih, b_hh = both_biases(b_ih, b_hh)

    def kernels(input, h, c, w_ih, w_hh, b_ih, b_hh):
        return gated_cell("lstm", input, None if h is None else (h, c), w_ih, w_hh, b_ih, b_hh)

    def reference(naive, input, h, c, **weights):
        if h is None:
            h = c = input.new_zeros((*input.shape[:-1], weights["w_hh"].shape[1]))
        return naive(input, (h, c), **weights)

    return dispatch(OP_CELL, dict(input=input, h=h, c=c, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh),
                    kernels=kernels, reference=reference)


def lstm(input, hx, weights, *, num_layers=1, bias=True, batch_first=False, dropout=0.0, training=True,
         bidirectional=False):
    """The whole LSTM, as torch.nn.LSTM's forward; see the module docstring."""
    h0, c0 = _states(OP, hx, RuntimeError)
    output, (h_n, c_n) = recurrent_sequence(OP, "lstm", input, [("hx", h0), ("cx", c0)], weights,
                                            num_layers=num_layers, bias=bias, batch_first=batch_first,
                                            dropout=dropout, training=training, bidirectional=bidirectional)
    return output, (h_n, c_n)


class LSTMCell(torch.nn.LSTMCell):
    """Drop-in `torch.nn.LSTMCell`."""

    def forward(self, input, hx=None):
        return lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTM(TraceableRecurrent, torch.nn.LSTM):
    """Drop-in `torch.nn.LSTM`: every constructor option but proj_size, PackedSequence input,
    torch's state_dict."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()

    def _check_supported(self):
        """NotImplementedError for a configuration these kernels do not compute (`ops.convert` then
        leaves a torch.nn.LSTM as it is, with this message as the reason)."""
        if self.proj_size > 0:
            raise NotImplementedError(f"{OP}: proj_size > 0 (LSTM with projections) is not supported by tritonprop")

    def forward(self, input, hx=None):
        return lstm(input, hx, self._weights(), **self._sequence_options())
