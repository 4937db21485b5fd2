"""The recurrent family's shared layer op and sequence machinery, and the Elman RNN.

    rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh")
        torch.rnn_tanh_cell / torch.rnn_relu_cell, one step: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh).
    rnn(input, hx, weights, *, nonlinearity="tanh", num_layers=1, bias=True, batch_first=False,
        dropout=0.0, training=True, bidirectional=False)
        torch._VF.rnn_tanh / rnn_relu, the whole sequence: the arguments of torch.nn.RNN's
        constructor as keywords, and `weights` in torch's `_flat_weights` order (per layer, per
        direction: w_ih, w_hh, then b_ih, b_hh when bias=True). `input` is (T, B, I), (B, T, I)
        with batch_first, (T, I) unbatched, or a PackedSequence; `hx` (num_layers * D, B, H) or
        None for zeros. Returns ``(output, h_n)`` exactly as torch.nn.RNN does.

Every layer of an RNN, LSTM or GRU is one `recurrent_layer` op (both directions, on the
recurrence engine of kernels/recurrence.py); `recurrent_sequence` composes layers, dropout
between them (tritonprop's dropout kernel) and packing, with autograd joining them, for all three
(ops/lstm.py and ops/gru.py hold the LSTM's and the GRU's functionals and modules). Double
backward (create_graph=True) is refused with an error naming the op: the BPTT kernels' backward
is not itself differentiable.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from tritonprop.kernels import recurrence
from tritonprop.kernels import rnn as K
from tritonprop.ops import _autocast, _checks
from tritonprop.ops._library import absent, call, differentiable, dispatch, kernel_op, not_differentiable, wanted
from tritonprop.ops.dropout import dropout as dropout_fn

OP = "rnn"
OP_CELL = "rnn_cell"
NONLINEARITIES = ("tanh", "relu")


@kernel_op("rnn_cell")
def rnn_cell_op(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
                nonlinearity: str) -> Tensor:
    """One step, h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), for 2-D x and h."""
    return K.cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)


@kernel_op("rnn_cell_backward")
def rnn_cell_backward_op(dy: Tensor, x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, y: Tensor, nonlinearity: str,
                         needs: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, dh, dw_ih, dw_hh, dbias), ``needs`` in that order; what was not asked for is `absent`."""
    grads = K.cell_backward(dy, x, h, w_ih, w_hh, y, nonlinearity, need_x=needs[0], need_h=needs[1],
                            need_w_ih=needs[2], need_w_hh=needs[3], need_bias=needs[4])
    return tuple(g if g is not None else absent(y) for g in grads)


def _cell_setup_context(ctx, inputs, output):
    x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity = inputs
    ctx.save_for_backward(x, h, w_ih, w_hh, output)
    ctx.nonlinearity = nonlinearity
    ctx.has_bias = b_ih is not None


def _cell_backward(ctx, dy):
    _checks.refuse_double_backward(OP_CELL)
    x, h, w_ih, w_hh, y = ctx.saved_tensors
    need_x, need_h, need_w_ih, need_w_hh, need_b_ih, need_b_hh = ctx.needs_input_grad[:6]
    need_bias = ctx.has_bias and (need_b_ih or need_b_hh)
    needs = [need_x, need_h, need_w_ih, need_w_hh, need_bias]
    dx, dh, dw_ih, dw_hh, db = wanted(call(rnn_cell_backward_op, dy, x, h, w_ih, w_hh, y, ctx.nonlinearity, needs),
                                      needs)
    # b_ih and b_hh enter z as one sum, so they share one gradient; each gets its own tensor.
    db_hh = db.clone() if need_bias and need_b_ih and need_b_hh else db
    return dx, dh, dw_ih, dw_hh, db if need_b_ih else None, db_hh if need_b_hh else None, None


differentiable(rnn_cell_op, setup_context=_cell_setup_context, backward=_cell_backward)
not_differentiable(rnn_cell_backward_op, explanation="double backward is not supported: the RNN cell's gradient "
                   "kernels are not themselves differentiable")

# The weights of one layer, per direction, as the layer op takes them (the second four only when
# bidirectional; biases None without bias).
_LAYER_WEIGHTS = 8


@kernel_op("recurrent_layer")
def recurrent_layer_op(x: Tensor, h0: Tensor, c0: Optional[Tensor], lengths: Optional[Tensor], cell: str,
                       w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
                       w_ih_reverse: Optional[Tensor], w_hh_reverse: Optional[Tensor], b_ih_reverse: Optional[Tensor],
                       b_hh_reverse: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One layer of `cell` ("rnn_tanh", "rnn_relu", "lstm", "gru"), both directions: x (T, B, I)
    time-major, h0 (and c0 for the LSTM) (D, B, H) -> (hidden, h_n, c_n, cells, gates).

    ``hidden`` is the (T + D, B, D*H) buffer that the backward reads, whose rows 1..T are the
    layer's output (T, B, D*H): a custom op may not return views of one another, so the
    functional takes the output view itself. ``cells`` and ``gates`` are saved for BPTT; c_n and
    cells are empty but for the LSTM (kernels/recurrence.py).
    """
    weights = _by_direction([w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse])
    return recurrence.forward(cell, x, h0, c0, weights, lengths)


@kernel_op("recurrent_layer_backward")
def recurrent_layer_backward_op(d_output: Tensor, dh_n: Tensor, dc_n: Optional[Tensor], x: Tensor, hidden: Tensor,
                                cells: Tensor, gates: Tensor, lengths: Optional[Tensor], cell: str, needs: list[bool],
                                w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
                                w_ih_reverse: Optional[Tensor], w_hh_reverse: Optional[Tensor],
                                b_ih_reverse: Optional[Tensor], b_hh_reverse: Optional[Tensor]) -> list[Tensor]:
    """[dx, dh0, dc0, then the gradient of each weight argument] (BPTT); ``needs`` is (x, h0, weights),
    and what was not asked for, or has no weight, is `absent`."""
    weights = _by_direction([w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse])
    dx, dh0, dc0, grads = recurrence.backward(cell, d_output, dh_n, dc_n, x, hidden, cells, gates, weights, lengths,
                                              need_x=needs[0], need_h0=needs[1], need_weights=needs[2])
    flat = [g for direction in grads for g in direction] if needs[2] else []
    if len(weights) == 2:
        # Both directions' dW_ih and db come from one matmul, as slices of it; an op's outputs
        # may not be views of one another, so each direction gets its own (weight-sized) copy.
        flat = [g.clone() if g is not None else None for g in flat]
    flat += [None] * (_LAYER_WEIGHTS - len(flat))
    return [g if g is not None else absent(x) for g in (dx, dh0, dc0, *flat)]


def _by_direction(weights):
    """(w_ih, w_hh, b_ih, b_hh) per direction present, from the layer op's eight weight arguments."""
    return [tuple(weights[first:first + 4]) for first in (0, 4) if weights[first] is not None]


def _layer_setup_context(ctx, inputs, output):
    x, h0, c0, lengths, cell, *weights = inputs
    hidden, _, _, cells, gates = output
    ctx.save_for_backward(x, hidden, cells, gates, lengths, *weights)
    ctx.cell = cell


def _layer_backward(ctx, d_hidden, dh_n, dc_n, d_cells, d_gates):
    _checks.refuse_double_backward(CELL_OPS[ctx.cell])
    x, hidden, cells, gates, lengths, *weights = ctx.saved_tensors
    need_x, need_h0, need_c0 = ctx.needs_input_grad[:3]
    need_weights = any(ctx.needs_input_grad[5:])
    d_output = d_hidden[1:x.shape[0] + 1]
    lstm = ctx.cell == "lstm"
    if lstm and dc_n is None:
        dc_n = torch.zeros_like(dh_n)
    grads = call(recurrent_layer_backward_op, d_output, dh_n, dc_n if lstm else None, x, hidden, cells, gates,
                 lengths, ctx.cell, [need_x, need_h0 or need_c0, need_weights], *weights)
    weight_grads = wanted(grads[3:], [need_weights and w is not None for w in weights])
    return (*wanted(grads[:3], (need_x, need_h0, need_c0 and lstm)), None, None, *weight_grads)


differentiable(recurrent_layer_op, setup_context=_layer_setup_context, backward=_layer_backward)
not_differentiable(recurrent_layer_backward_op, explanation="double backward is not supported: the BPTT kernels' "
                   "backward is not itself differentiable")

# The layer op's `cell` -> the op a user called, for error messages.
CELL_OPS = {"rnn_tanh": "rnn", "rnn_relu": "rnn", "lstm": "lstm", "gru": "gru"}


def _recurrent_layer(cell, x, states, lengths, weights):
    """(output (T, B, D*H), final states) of one layer; `states` is (h0,) or (h0, c0), each
    (D, B, H); `weights` as torch's _flat_weights has them for this layer: per direction w_ih,
    w_hh, then b_ih, b_hh when there is a bias."""
    D = states[0].shape[0]
    per = len(weights) // D
    arguments = []
    for first in (0, per):
        direction = list(weights[first:first + per]) if first < len(weights) else []
        arguments += direction + [None] * (4 - len(direction))
    c0 = states[1] if cell == "lstm" else None
    hidden, h_n, c_n, _, _ = call(recurrent_layer_op, x, states[0], c0, lengths, cell, *arguments)
    return hidden[1:x.shape[0] + 1], ((h_n, c_n) if cell == "lstm" else (h_n,))


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _check_nonlinearity(op, nonlinearity, error=ValueError):
    # torch.nn.RNN's constructor raises ValueError; RNNCell's forward raises RuntimeError.
    if nonlinearity not in NONLINEARITIES:
        raise error(f"{op}: Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")


def _check_dtypes(op, input, named, error):
    """Every tensor shares input's dtype (torch's RNNs require it), unless autocast will cast them all."""
    if not _autocast.autocasting(input.device.type):
        _checks.check_same_dtype(op, input, named, "input dtype ({input}) does not match {name} dtype ({other}). "
                                 "Convert input: input.to({other}), or convert the {name}: .to({input})", error)


def validate_cell(op, input, states, w_ih, w_hh, b_ih, b_hh, gates):
    """The checks torch's cells make: `states` is [(name, tensor or None)] (hx; or hx and cx for the
    LSTM), W_ih (gates*H, I), W_hh (gates*H, H), biases (gates*H,)."""
    for name, t in (("input", input), ("w_ih", w_ih), ("w_hh", w_hh)):
        _checks.check_tensor(op, name, t)
    if input.dim() not in (1, 2):
        raise ValueError(f"{op}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if (w_ih.dim() != 2 or w_hh.dim() != 2 or w_hh.shape[0] != gates * w_hh.shape[1]
            or w_ih.shape[0] != w_hh.shape[0]):
        raise RuntimeError(f"{op}: expected w_ih ({gates} * hidden_size, input_size) and w_hh ({gates} * hidden_size, "
                           f"hidden_size), got w_ih of size {list(w_ih.shape)} and w_hh of size {list(w_hh.shape)}")
    hidden_size, input_size = w_hh.shape[1], w_ih.shape[1]
    if input.shape[-1] != input_size:
        raise RuntimeError(f"{op}: input has inconsistent input_size: got {input.shape[-1]} expected {input_size}")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            _checks.check_tensor(op, name, b)
            if b.shape != (gates * hidden_size,):
                raise RuntimeError(f"{op}: expected {name} of size [{gates * hidden_size}] ({gates} * hidden_size), "
                                   f"got {list(b.shape)}")
    for name, state in states:
        if state is None:
            continue
        _checks.check_tensor(op, name, state)
        if state.dim() != input.dim():
            raise RuntimeError(f"{op}: {name} must have as many dims as input ({input.dim()}), got {name} of size "
                               f"{list(state.shape)}")
        if state.shape[-1] != hidden_size:
            raise RuntimeError(f"{op}: {name} has inconsistent hidden_size: got {state.shape[-1]}, "
                               f"expected {hidden_size}")
        if input.dim() == 2 and state.shape[0] != input.shape[0]:
            raise RuntimeError(f"{op}: Input batch size {input.shape[0]} doesn't match {name} batch size "
                               f"{state.shape[0]}")
    # torch's cells fail in their matmul, with RuntimeError, on any dtype mismatch.
    _check_dtypes(op, input, (*states, ("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)), RuntimeError)
    _checks.check_floating(op, "input", input)


def both_biases(b_ih, b_hh):
    """torch's cells take one bias alone; the kernels add both, so the missing one is 0."""
    if (b_ih is None) == (b_hh is None):
        return b_ih, b_hh
    present = b_ih if b_hh is None else b_hh
    return tuple(b if b is not None else torch.zeros_like(present) for b in (b_ih, b_hh))


def validate_sequence(op, data, packed, states, weights, gates, num_layers, bias, dropout, bidirectional):
    """torch.nn.RNN / LSTM / GRU's argument checks; `states` is [(name, tensor or None)]."""
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"{op}: num_layers must be a positive int, got {num_layers!r}")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(f"{op}: dropout should be a number in range [0, 1] representing the probability of an "
                         f"element being zeroed, got {dropout!r}")
    _checks.check_tensor(op, "input", data)
    if packed and data.dim() != 2:
        raise RuntimeError(f"{op}: a packed input's data must have 2 dimensions, got {data.dim()}")
    if not packed and data.dim() not in (2, 3):
        raise ValueError(f"{op}: Expected input to be 2D or 3D, got {data.dim()}D tensor instead")
    D = 2 if bidirectional else 1
    per = 4 if bias else 2
    expected = num_layers * D * per
    if not isinstance(weights, (list, tuple)) or len(weights) != expected:
        count = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
        raise ValueError(f"{op}: weights must be a list of {expected} tensors (num_layers={num_layers}, "
                         f"{'bidirectional' if bidirectional else 'one direction'}, bias={bias}) in torch's "
                         f"_flat_weights order, got {count}")
    for k, w in enumerate(weights):
        _checks.check_tensor(op, f"weights[{k}]", w)
    if weights[1].dim() != 2 or weights[1].shape[0] % gates:
        raise RuntimeError(f"{op}: weights[1] (w_hh of layer 0) must be ({gates} * hidden_size, hidden_size), got "
                           f"size {list(weights[1].shape)}")
    rows = weights[1].shape[0]
    hidden_size = rows // gates
    for layer in range(num_layers):
        in_size = data.shape[-1] if layer == 0 else D * hidden_size
        for d in range(D):
            first = (layer * D + d) * per
            shapes = [(rows, in_size), (rows, hidden_size)] + [(rows,)] * (per - 2)
            for k, shape in enumerate(shapes):
                w = weights[first + k]
                if w.shape != shape:
                    if layer == 0 and k == 0 and w.dim() == 2 and w.shape[0] == rows:
                        raise RuntimeError(f"{op}: input.size(-1) must be equal to input_size. Expected "
                                           f"{w.shape[1]}, got {data.shape[-1]}")
                    raise RuntimeError(f"{op}: weights[{first + k}] (layer {layer}, direction {d}) should have size "
                                       f"{list(shape)}, got {list(w.shape)}")
    # As torch's RNNs: ValueError when the input's dtype is not the weights', RuntimeError (from
    # its matmul) when only a state differs.
    _check_dtypes(op, data, [(f"weights[{k}]", w) for k, w in enumerate(weights)], ValueError)
    _checks.check_floating(op, "input", data)
    for name, state in states:
        if state is not None:
            _checks.check_tensor(op, name, state)
    _check_dtypes(op, data, states, RuntimeError)


def _check_states(op, states, expected, unbatched):
    """Each state (num_layers * D, B, H), or (num_layers * D, H) unbatched, with torch's messages."""
    given = [(name, s) for name, s in states if s is not None]
    wanted_dim = 2 if unbatched else 3
    if any(s.dim() != wanted_dim for _, s in given):
        kind = "unbatched 2-D" if unbatched else "batched 3-D"
        dims = ", ".join(f"{s.dim()}-D" for _, s in given)
        names = " and ".join(name for name, _ in given)
        raise RuntimeError(f"{op}: For {kind} input, {names} should also be {wanted_dim}-D but got ({dims}) tensor")
    for name, state in given:
        shape = tuple(state.shape) if not unbatched else (state.shape[0], 1, state.shape[1])
        if shape != expected:
            shown = expected if not unbatched else (expected[0], expected[2])
            raise RuntimeError(f"{op}: Expected {name} size {shown}, got {list(state.shape)}")


# ----------------------------------------------------------------------------------------------
# Functionals
# ----------------------------------------------------------------------------------------------


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One RNN step, as torch.rnn_tanh_cell / torch.rnn_relu_cell (and torch.nn.RNNCell's forward).

    input (B, I) or unbatched (I,); hx (B, H), (H,), or None for zeros. Returns h' of hx's shape.
    """
    _check_nonlinearity(OP_CELL, nonlinearity, RuntimeError)
    validate_cell(OP_CELL, input, [("hx", hx)], w_ih, w_hh, b_ih, b_hh, gates=1)
    b_ih, b_hh = both_biases(b_ih, b_hh)

    def kernels(input, hx, w_ih, w_hh, b_ih, b_hh):
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            h = torch.zeros((x.shape[0], w_hh.shape[0]), device=x.device, dtype=x.dtype)
        else:
            h = hx.unsqueeze(0) if unbatched else hx
        y = call(rnn_cell_op, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        return y.squeeze(0) if unbatched else y

    return dispatch(OP_CELL, dict(input=input, hx=hx, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), kernels=kernels,
                    reference=lambda naive, **tensors: naive(**tensors, nonlinearity=nonlinearity))


def gated_cell(cell, input, states, w_ih, w_hh, b_ih, b_hh):
    """One LSTM or GRU step on the recurrence engine: a sequence of one step, so that the cell
    runs the very gate epilogue the layers run. `states` is (h, c) for the LSTM, (h,) for the
    GRU, 1-D or 2-D like input, None for zeros. Returns the new states, a tuple like `states`."""
    unbatched = input.dim() == 1
    x = input.reshape(1, 1, -1) if unbatched else input.unsqueeze(0)
    batch, hidden_size = x.shape[1], w_hh.shape[1]
    if states is None:
        states = tuple(torch.zeros((batch, hidden_size), device=x.device, dtype=x.dtype) for _ in range(
            2 if cell == "lstm" else 1))
    else:
        states = tuple(s.reshape(1, -1) if unbatched else s for s in states)
    _, finals = _recurrent_layer(cell, x, tuple(s.unsqueeze(0) for s in states), None, [w_ih, w_hh, b_ih, b_hh]
                                 if b_ih is not None else [w_ih, w_hh])
    return tuple(f[0, 0] if unbatched else f[0] for f in finals)


def _time_major(x):
    # The kernels flatten (T, B) into the rows of one matmul: a time-major view does so in place;
    # a batch-first input, seen through a transpose, is copied once here.
    steps, batch = x.shape[:2]
    rows_merge = steps <= 1 or batch <= 1 or x.stride(0) == batch * x.stride(1)
    return x if rows_merge else x.contiguous()


def recurrent_sequence(op, cell, input, states, weights, *, num_layers, bias, batch_first, dropout, training,
                       bidirectional):
    """torch.nn.RNN / LSTM / GRU's forward for `cell` ("rnn_tanh", "rnn_relu", "lstm", "gru").

    `states` is [(name, tensor or None)]: [("hx", h0)], or [("hx", h0), ("cx", c0)] for the LSTM,
    where both are given or neither. Validates, then dispatches. Returns (output, final states as
    a tuple in the order of `states`).
    """
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    gates = recurrence.GATES[recurrence.CELLS[cell]]
    validate_sequence(op, data, packed, states, weights, gates, num_layers, bias, dropout, bidirectional)
    weight_names = [f"weights[{k}]" for k in range(len(weights))]
    state_names = [name for name, _ in states]

    def unpacked(tensors):
        """(the input as given, packed or not, the states (None for zeros), weights) from dispatch's cast tensors."""
        data = tensors["input"]
        if packed:
            data = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        given = [tensors[name] for name in state_names]
        return data, (None if given[0] is None else tuple(given)), [tensors[name] for name in weight_names]

    options = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, dropout=dropout, training=training,
                   bidirectional=bidirectional)

    def reference(naive, **tensors):
        data, given, weights = unpacked(tensors)
        if cell.startswith("rnn"):
            output, h_n = naive(data, given[0] if given else None, weights, nonlinearity=cell[4:], **options)
            return output, (h_n,)
        output, finals = naive(data, given if cell == "lstm" or given is None else given[0], weights, **options)
        return output, (tuple(finals) if cell == "lstm" else (finals,))

    return dispatch(op, dict(input=data, **dict(states), **dict(zip(weight_names, weights))),
                    kernels=lambda **tensors: _sequence_kernels(op, cell, *unpacked(tensors), **options),
                    reference=reference)


def _sequence_kernels(op, cell, input, states, weights, *, num_layers, bias, batch_first, dropout, training,
                      bidirectional):
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    D = 2 if bidirectional else 1
    H = weights[1].shape[1]
    count = 2 if cell == "lstm" else 1
    names = ("hx", "cx")[:count]

    lengths = None
    unbatched = False
    if packed:
        # Time-major and in the packed (descending-length) order; the states follow that order as in torch.
        x, lengths = pad_packed_sequence(PackedSequence(data, input.batch_sizes))
        if states is not None and input.sorted_indices is not None:
            states = tuple(s.index_select(1, input.sorted_indices) for s in states)
        batch = x.shape[1]
    else:
        unbatched = data.dim() == 2
        x = data.unsqueeze(1) if unbatched else (data.transpose(0, 1) if batch_first else data)
        batch = x.shape[1]
    if states is not None:
        _check_states(op, list(zip(names, states)), (num_layers * D, batch, H), unbatched)
    if x.shape[0] == 0:
        raise RuntimeError(f"{op}: Expected sequence length to be larger than 0 in RNN (input of size "
                           f"{list(data.shape)})")
    if states is None:
        states = tuple(torch.zeros((num_layers * D, batch, H), device=x.device, dtype=x.dtype) for _ in names)
    elif unbatched:
        states = tuple(s.unsqueeze(1) for s in states)
    device_lengths = None if lengths is None else lengths.to(device=x.device, dtype=torch.int32)

    x = _time_major(x)
    per_layer = len(weights) // num_layers
    finals = []
    for layer in range(num_layers):
        if layer > 0 and dropout > 0:
            x = dropout_fn(x, dropout, training)
        layer_weights = weights[layer * per_layer:(layer + 1) * per_layer]
        x, layer_finals = _recurrent_layer(cell, x, tuple(s[layer * D:(layer + 1) * D] for s in states),
                                           device_lengths, layer_weights)
        finals.append(layer_finals)
    finals = tuple(finals[0][k] if num_layers == 1 else torch.cat([f[k] for f in finals]) for k in range(count))

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
    """The whole RNN, as torch.nn.RNN's forward (torch._VF.rnn_tanh / rnn_relu); see the module docstring."""
    _check_nonlinearity(OP, nonlinearity)
    output, (h_n,) = recurrent_sequence(OP, f"rnn_{nonlinearity}", input, [("hx", hx)], weights,
                                        num_layers=num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
                                        training=training, bidirectional=bidirectional)
    return output, h_n


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class RNNCell(torch.nn.RNNCell):
    """Drop-in `torch.nn.RNNCell`. As in torch, a wrong ``nonlinearity`` is refused by forward, with RuntimeError."""

    def forward(self, input, hx=None):
        return rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)


class TraceableRecurrent:
    """Mixin for our subclasses of torch.nn.RNN, LSTM and GRU.

    Dynamo refuses to trace any instance of those unless allow_rnn is set (torch's own forward
    calls the fused cuDNN entry point, which it cannot trace); our forward is traceable ops, so a
    model that holds one is made compilable. The switch is global: torch's own RNN modules are then
    traced too ("experimental" in torch), where they would otherwise break the graph.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._finish_convert()

    def _finish_convert(self):
        """What construction does beyond torch's; `ops.convert` runs it on a converted torch module."""
        torch._dynamo.config.allow_rnn = True

    def _sequence_options(self) -> dict:
        return dict(num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                    dropout=float(self.dropout), training=self.training, bidirectional=self.bidirectional)

    def _weights(self) -> list:
        return [getattr(self, name) for name in self._flat_weights_names]


class RNN(TraceableRecurrent, torch.nn.RNN):
    """Drop-in `torch.nn.RNN`: every constructor option, PackedSequence input, torch's state_dict."""

    def forward(self, input, hx=None):
        return rnn(input, hx, self._weights(), nonlinearity=self.nonlinearity, **self._sequence_options())
