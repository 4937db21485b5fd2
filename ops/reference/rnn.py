"""The Elman RNN unrolled in Python, with autograd doing BPTT: the oracle for the
kernels of kernels/rnn.py (one step) and kernels/recurrence.py (the sequence).

One step (the cell), for a batch of inputs x (B, I) and states h (B, H):

    h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh),    act = tanh or relu

The sequence applies the cell at t = 0 .. T-1 (t = T-1 .. 0 for the reverse direction of a
bidirectional layer, whose output is concatenated after the forward one's), layer after layer,
with dropout on each layer's output but the last's. A sequence shorter than T (a packed batch)
keeps its state past its end: `rnn_layer` freezes h where t >= length, so h_n is the state at
its last real step, and the reverse direction starts at that step.

There is no hand-written backward: autograd records every step and runs BPTT through the Python
loop (rnn_numpy.py derives it by hand). Low-precision inputs are computed in float32 and cast back
once, at the end. The signatures are those of tritonprop.ops.rnn_cell and tritonprop.ops.rnn.
"""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from tritonprop.ops.reference.dropout import dropout as reference_dropout

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    """One step, in whatever dtype it is given."""
    z = x @ w_ih.t() + h @ w_hh.t()
    if b_ih is not None:
        z = z + b_ih + b_hh
    return ACTIVATIONS[nonlinearity](z)


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """torch.rnn_tanh_cell / rnn_relu_cell: input (B, I) or (I,), hx of the matching shape or None."""
    compute = _compute_dtype(input.dtype)
    if hx is None:
        hx = input.new_zeros((*input.shape[:-1], w_hh.shape[0]))
    cast = [t.to(compute) if t is not None else None for t in (input, hx, w_ih, w_hh, b_ih, b_hh)]
    return cell(*cast, nonlinearity).to(input.dtype)


def rnn_layer(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse=False, lengths=None):
    """One direction of one layer: x (T, B, I), h0 (B, H) -> (outputs (T, B, H), h_n (B, H)).

    With `lengths` (B,), steps t >= lengths[b] leave the state of sequence b as it is.
    """
    T = x.shape[0]
    h = h0
    outputs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new = cell(x[t], h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        if lengths is not None:
            h_new = torch.where((t < lengths).unsqueeze(1), h_new, h)
        h = h_new
        outputs[t] = h
    return torch.stack(outputs), h


def sequence(layer, input, states, weights, *, num_layers, bias, batch_first, dropout, training, bidirectional,
             state_count=1):
    """torch's multi-layer recurrent forward as a Python loop over layers and directions, for any cell.

    `layer(x, states, w_ih, w_hh, b_ih, b_hh, reverse, lengths)` runs one direction of one layer
    and returns (outputs (T, B, H), final states); `states` is a tuple of (num_layers * D, B, H)
    tensors (h, and c for the LSTM), or None for `state_count` zero states. Returns (output, the tuple of final states)
    in torch's layout: packed, batch-first or unbatched as the input was.
    """
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    compute = _compute_dtype(data.dtype)
    D = 2 if bidirectional else 1
    H = weights[1].shape[1]
    lengths = None
    unbatched = False
    if packed:
        x, lengths = pad_packed_sequence(PackedSequence(data, input.batch_sizes))
        if states is not None and input.sorted_indices is not None:
            states = tuple(s.index_select(1, input.sorted_indices) for s in states)
    else:
        unbatched = data.dim() == 2
        x = data.unsqueeze(1) if unbatched else (data.transpose(0, 1) if batch_first else data)
        if states is not None and unbatched:
            states = tuple(s.unsqueeze(1) for s in states)
    if states is None:
        states = tuple(x.new_zeros((num_layers * D, x.shape[1], H)) for _ in range(state_count))
    x = x.to(compute)
    states = tuple(s.to(compute) for s in states)
    weights = [w.to(compute) for w in weights]
    step_lengths = None if lengths is None else lengths.to(x.device)

    per_direction = 4 if bias else 2
    finals = []
    for layer_index in range(num_layers):
        if layer_index > 0:
            x = reference_dropout(x, dropout, training, False)
        outputs = []
        for d in range(D):
            first = (layer_index * D + d) * per_direction
            w_ih, w_hh, *biases = weights[first:first + per_direction]
            b_ih, b_hh = biases if bias else (None, None)
            out, last = layer(x, tuple(s[layer_index * D + d] for s in states), w_ih, w_hh, b_ih, b_hh,
                              d == 1, step_lengths)
            outputs.append(out)
            finals.append(last)
        x = torch.cat(outputs, dim=2)
    x = x.to(data.dtype)
    finals = tuple(torch.stack([f[k] for f in finals]).to(data.dtype) for k in range(len(states)))

    if packed:
        out = pack_padded_sequence(x, lengths).data
        if input.unsorted_indices is not None:
            finals = tuple(f.index_select(1, input.unsorted_indices) for f in finals)
        return PackedSequence(out, input.batch_sizes, input.sorted_indices, input.unsorted_indices), finals
    if unbatched:
        return x.squeeze(1), tuple(f.squeeze(1) for f in finals)
    return (x.transpose(0, 1) if batch_first else x), finals


def rnn(input, hx, weights, *, nonlinearity="tanh", num_layers=1, bias=True, batch_first=False, dropout=0.0,
        training=True, bidirectional=False):
    """torch.nn.RNN's forward as a Python loop over layers, directions and time steps."""
    def layer(x, states, w_ih, w_hh, b_ih, b_hh, reverse, lengths):
        out, h = rnn_layer(x, states[0], w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse=reverse, lengths=lengths)
        return out, (h,)

    output, (h_n,) = sequence(layer, input, (hx,) if hx is not None else None, weights, num_layers=num_layers,
                              bias=bias, batch_first=batch_first, dropout=dropout, training=training,
                              bidirectional=bidirectional)
    return output, h_n
