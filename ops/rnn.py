"""Elman RNN: custom ops with their autograd, the `rnn_cell` and `rnn` functionals, and the `RNNCell` and `RNN` modules.

    rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh")
        torch.rnn_tanh_cell / torch.rnn_relu_cell, one step: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh).
    rnn(input, hx, weights, *, nonlinearity="tanh", num_layers=1, bias=True, batch_first=False,
        dropout=0.0, training=True, bidirectional=False)
        torch._VF.rnn_tanh / rnn_relu, the whole sequence: the arguments of torch.nn.RNN's
        constructor as keywords, and `weights` in torch's `_flat_weights` order (per layer, per
        direction: w_ih, w_hh, then b_ih, b_hh when bias=True). `input` is (T, B, I), (B, T, I)
        with batch_first, (T, I) unbatched, or a PackedSequence; `hx` (num_layers * D, B, H) or
        None for zeros. Returns ``(output, h_n)`` exactly as torch.nn.RNN does.

Each layer is one `rnn_layer` op (both directions; kernels/rnn.py); layers, dropout between them
(tritonprop's dropout kernel) and packing are composed here, with autograd joining them.
Double backward (create_graph=True) is refused with an error naming the op: the BPTT kernels'
backward is not itself differentiable.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

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


@kernel_op("rnn_layer")
def rnn_layer_op(x: Tensor, h0: Tensor, lengths: Optional[Tensor], nonlinearity: str, w_ih: Tensor, w_hh: Tensor,
                 b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_ih_reverse: Optional[Tensor],
                 w_hh_reverse: Optional[Tensor], b_ih_reverse: Optional[Tensor], b_hh_reverse: Optional[Tensor]
                 ) -> tuple[Tensor, Tensor]:
    """One layer, both directions: x (T, B, I) time-major, h0 (D, B, H) -> (hidden, h_n).

    ``hidden`` is the (T + D, B, D*H) buffer that the backward reads, whose rows 1..T are the
    layer's output (T, B, D*H): a custom op may not return views of one another, so the
    functional takes the output view itself.
    """
    weights = _by_direction([w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse])
    _, h_n, hidden = K.forward(x, h0, weights, nonlinearity, lengths)
    return hidden, h_n


@kernel_op("rnn_layer_backward")
def rnn_layer_backward_op(d_output: Tensor, dh_n: Tensor, x: Tensor, hidden: Tensor, lengths: Optional[Tensor],
                          nonlinearity: str, needs: list[bool], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                          b_hh: Optional[Tensor], w_ih_reverse: Optional[Tensor], w_hh_reverse: Optional[Tensor],
                          b_ih_reverse: Optional[Tensor], b_hh_reverse: Optional[Tensor]) -> list[Tensor]:
    """[dx, dh0, then the gradient of each weight argument] (BPTT); ``needs`` is (x, h0, weights), and
    what was not asked for, or has no weight, is `absent`."""
    weights = _by_direction([w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse])
    dx, dh0, grads = K.backward(d_output, dh_n, x, hidden, weights, nonlinearity, lengths, need_x=needs[0],
                                need_h0=needs[1], need_weights=needs[2])
    flat = [g for direction in grads for g in direction] if needs[2] else []
    if len(weights) == 2:
        # Both directions' dW_ih and db come from one matmul, as slices of it; an op's outputs
        # may not be views of one another, so each direction gets its own (weight-sized) copy.
        flat = [g.clone() if g is not None else None for g in flat]
    flat += [None] * (_LAYER_WEIGHTS - len(flat))
    return [g if g is not None else absent(x) for g in (dx, dh0, *flat)]


def _by_direction(weights):
    """(w_ih, w_hh, b_ih, b_hh) per direction present, from the layer op's eight weight arguments."""
    return [tuple(weights[first:first + 4]) for first in (0, 4) if weights[first] is not None]


def _layer_setup_context(ctx, inputs, output):
    x, h0, lengths, nonlinearity, *weights = inputs
    hidden, _ = output
    ctx.save_for_backward(x, hidden, lengths, *weights)
    ctx.nonlinearity = nonlinearity


def _layer_backward(ctx, d_hidden, dh_n):
    _checks.refuse_double_backward(OP)
    x, hidden, lengths, *weights = ctx.saved_tensors
    need_x, need_h0 = ctx.needs_input_grad[:2]
    need_weights = any(ctx.needs_input_grad[4:])
    d_output = d_hidden[1:x.shape[0] + 1]
    grads = call(rnn_layer_backward_op, d_output, dh_n, x, hidden, lengths, ctx.nonlinearity,
                 [need_x, need_h0, need_weights], *weights)
    weight_grads = wanted(grads[2:], [need_weights and w is not None for w in weights])
    return (*wanted(grads[:2], (need_x, need_h0)), None, None, *weight_grads)


differentiable(rnn_layer_op, setup_context=_layer_setup_context, backward=_layer_backward)
not_differentiable(rnn_layer_backward_op, explanation="double backward is not supported: the BPTT kernels' "
                   "backward is not itself differentiable")


def _rnn_layer(x, h0, lengths, nonlinearity, weights):
    """(output (T, B, D*H), h_n (D, B, H)) of one layer; `weights` as torch's _flat_weights has them
    for this layer: per direction w_ih, w_hh, then b_ih, b_hh when there is a bias."""
    per = len(weights) // h0.shape[0]
    arguments = []
    for first in (0, per):
        direction = list(weights[first:first + per]) if first < len(weights) else []
        arguments += direction + [None] * (4 - len(direction))
    hidden, h_n = call(rnn_layer_op, x, h0, lengths, nonlinearity, *arguments)
    return hidden[1:x.shape[0] + 1], h_n


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


def _validate_cell(input, hx, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    _check_nonlinearity(OP_CELL, nonlinearity, RuntimeError)
    for name, t in (("input", input), ("w_ih", w_ih), ("w_hh", w_hh)):
        _checks.check_tensor(OP_CELL, name, t)
    if input.dim() not in (1, 2):
        raise ValueError(f"{OP_CELL}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if w_ih.dim() != 2 or w_hh.dim() != 2 or w_hh.shape[1] != w_hh.shape[0] or w_ih.shape[0] != w_hh.shape[0]:
        raise RuntimeError(f"{OP_CELL}: expected w_ih (hidden_size, input_size) and w_hh (hidden_size, hidden_size), "
                           f"got w_ih of size {list(w_ih.shape)} and w_hh of size {list(w_hh.shape)}")
    hidden_size, input_size = w_ih.shape
    if input.shape[-1] != input_size:
        raise RuntimeError(f"{OP_CELL}: input has inconsistent input_size: got {input.shape[-1]} expected {input_size}")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            _checks.check_tensor(OP_CELL, name, b)
            if b.shape != (hidden_size,):
                raise RuntimeError(f"{OP_CELL}: expected {name} of size [{hidden_size}] (hidden_size), "
                                   f"got {list(b.shape)}")
    if hx is not None:
        _checks.check_tensor(OP_CELL, "hx", hx)
        if hx.dim() != input.dim():
            raise RuntimeError(f"{OP_CELL}: hx must have as many dims as input ({input.dim()}), got hx of size "
                               f"{list(hx.shape)}")
        if hx.shape[-1] != hidden_size:
            raise RuntimeError(f"{OP_CELL}: hx (hidden0) has inconsistent hidden_size: got {hx.shape[-1]}, "
                               f"expected {hidden_size}")
        if input.dim() == 2 and hx.shape[0] != input.shape[0]:
            raise RuntimeError(f"{OP_CELL}: Input batch size {input.shape[0]} doesn't match hx (hidden0) batch size "
                               f"{hx.shape[0]}")
    # torch's cell fails in its matmul, with RuntimeError, on any dtype mismatch.
    _check_dtypes(OP_CELL, input, (("hx", hx), ("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)),
                  RuntimeError)
    _checks.check_floating(OP_CELL, "input", input)


def _validate_sequence(data, packed, hx, weights, nonlinearity, num_layers, bias, dropout, bidirectional):
    _check_nonlinearity(OP, nonlinearity)
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"{OP}: num_layers must be a positive int, got {num_layers!r}")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(f"{OP}: dropout should be a number in range [0, 1] representing the probability of an "
                         f"element being zeroed, got {dropout!r}")
    _checks.check_tensor(OP, "input", data)
    if packed and data.dim() != 2:
        raise RuntimeError(f"{OP}: a packed input's data must have 2 dimensions, got {data.dim()}")
    if not packed and data.dim() not in (2, 3):
        raise ValueError(f"{OP}: Expected input to be 2D or 3D, got {data.dim()}D tensor instead")
    D = 2 if bidirectional else 1
    per = 4 if bias else 2
    expected = num_layers * D * per
    if not isinstance(weights, (list, tuple)) or len(weights) != expected:
        count = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
        raise ValueError(f"{OP}: weights must be a list of {expected} tensors (num_layers={num_layers}, "
                         f"{'bidirectional' if bidirectional else 'one direction'}, bias={bias}) in torch's "
                         f"_flat_weights order, got {count}")
    for k, w in enumerate(weights):
        _checks.check_tensor(OP, f"weights[{k}]", w)
    hidden_size = weights[1].shape[0]
    for layer in range(num_layers):
        in_size = data.shape[-1] if layer == 0 else D * hidden_size
        for d in range(D):
            first = (layer * D + d) * per
            shapes = [(hidden_size, in_size), (hidden_size, hidden_size)] + [(hidden_size,)] * (per - 2)
            for k, shape in enumerate(shapes):
                w = weights[first + k]
                if w.shape != shape:
                    if layer == 0 and k == 0 and w.dim() == 2 and w.shape[0] == hidden_size:
                        raise RuntimeError(f"{OP}: input.size(-1) must be equal to input_size. Expected "
                                           f"{w.shape[1]}, got {data.shape[-1]}")
                    raise RuntimeError(f"{OP}: weights[{first + k}] (layer {layer}, direction {d}) should have size "
                                       f"{list(shape)}, got {list(w.shape)}")
    # As torch.nn.RNN: ValueError when the input's dtype is not the weights', RuntimeError (from
    # its matmul) when only hx differs.
    _check_dtypes(OP, data, [(f"weights[{k}]", w) for k, w in enumerate(weights)], ValueError)
    _checks.check_floating(OP, "input", data)
    if hx is not None:
        _checks.check_tensor(OP, "hx", hx)
    _check_dtypes(OP, data, [("hx", hx)], RuntimeError)


def _check_hx(hx, expected, unbatched):
    if hx is None:
        return
    wanted_dim = 2 if unbatched else 3
    if hx.dim() != wanted_dim:
        kind = "unbatched 2-D" if unbatched else "batched 3-D"
        raise RuntimeError(f"{OP}: For {kind} input, hx should also be {wanted_dim}-D but got {hx.dim()}-D tensor")
    shape = tuple(hx.shape) if not unbatched else (hx.shape[0], 1, hx.shape[1])
    if shape != expected:
        shown = expected if not unbatched else (expected[0], expected[2])
        raise RuntimeError(f"{OP}: Expected hx (hidden) size {shown}, got {list(hx.shape)}")


# ----------------------------------------------------------------------------------------------
# Functionals
# ----------------------------------------------------------------------------------------------


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One RNN step, as torch.rnn_tanh_cell / torch.rnn_relu_cell (and torch.nn.RNNCell's forward).

    input (B, I) or unbatched (I,); hx (B, H), (H,), or None for zeros. Returns h' of hx's shape.
    """
    _validate_cell(input, hx, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    if (b_ih is None) != (b_hh is None):
        # torch's cell takes one bias alone; the kernel adds both, so the missing one is 0.
        b_ih, b_hh = (b if b is not None else torch.zeros_like(b_ih if b_hh is None else b_hh) for b in (b_ih, b_hh))

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


def _time_major(x):
    # The kernels flatten (T, B) into the rows of one matmul: a time-major view does so in place;
    # a batch-first input, seen through a transpose, is copied once here.
    steps, batch = x.shape[:2]
    rows_merge = steps <= 1 or batch <= 1 or x.stride(0) == batch * x.stride(1)
    return x if rows_merge else x.contiguous()


def rnn(input, hx, weights, *, nonlinearity="tanh", num_layers=1, bias=True, batch_first=False, dropout=0.0,
        training=True, bidirectional=False):
    """The whole RNN, as torch.nn.RNN's forward (torch._VF.rnn_tanh / rnn_relu); see the module docstring."""
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    _validate_sequence(data, packed, hx, weights, nonlinearity, num_layers, bias, dropout, bidirectional)
    weight_names = [f"weights[{k}]" for k in range(len(weights))]

    def unpacked(tensors):
        """(the input as given, packed or not, hx, weights) from dispatch's cast tensors."""
        data = tensors["input"]
        if packed:
            data = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        return data, tensors["hx"], [tensors[name] for name in weight_names]

    options = dict(nonlinearity=nonlinearity, num_layers=num_layers, bias=bias, batch_first=batch_first,
                   dropout=dropout, training=training, bidirectional=bidirectional)
    return dispatch(OP, dict(input=data, hx=hx, **dict(zip(weight_names, weights))),
                    kernels=lambda **tensors: _rnn_kernels(*unpacked(tensors), **options),
                    reference=lambda naive, **tensors: naive(*unpacked(tensors), **options))


def _rnn_kernels(input, hx, weights, *, nonlinearity, num_layers, bias, batch_first, dropout, training,
                 bidirectional):
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    D = 2 if bidirectional else 1
    H = weights[1].shape[0]

    lengths = None
    unbatched = False
    if packed:
        # Time-major and in the packed (descending-length) order; hx follows that order as in torch.
        x, lengths = pad_packed_sequence(PackedSequence(data, input.batch_sizes))
        if hx is not None and input.sorted_indices is not None:
            hx = hx.index_select(1, input.sorted_indices)
        batch = x.shape[1]
    else:
        unbatched = data.dim() == 2
        x = data.unsqueeze(1) if unbatched else (data.transpose(0, 1) if batch_first else data)
        batch = x.shape[1]
    _check_hx(hx, (num_layers * D, batch, H), unbatched)
    if x.shape[0] == 0:
        raise RuntimeError(f"{OP}: Expected sequence length to be larger than 0 in RNN (input of size "
                           f"{list(data.shape)})")
    if hx is None:
        hx = torch.zeros((num_layers * D, batch, H), device=x.device, dtype=x.dtype)
    elif unbatched:
        hx = hx.unsqueeze(1)
    device_lengths = None if lengths is None else lengths.to(device=x.device, dtype=torch.int32)

    x = _time_major(x)
    per_layer = len(weights) // num_layers
    h_n = []
    for layer in range(num_layers):
        if layer > 0 and dropout > 0:
            x = dropout_fn(x, dropout, training)
        layer_weights = weights[layer * per_layer:(layer + 1) * per_layer]
        x, h_layer = _rnn_layer(x, hx[layer * D:(layer + 1) * D], device_lengths, nonlinearity, layer_weights)
        h_n.append(h_layer)
    h_n = h_n[0] if num_layers == 1 else torch.cat(h_n)

    if packed:
        out = pack_padded_sequence(x, lengths).data
        if input.unsorted_indices is not None:
            h_n = h_n.index_select(1, input.unsorted_indices)
        return PackedSequence(out, input.batch_sizes, input.sorted_indices, input.unsorted_indices), h_n
    if unbatched:
        return x.squeeze(1), h_n.squeeze(1)
    return (x.transpose(0, 1) if batch_first else x), h_n


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class RNNCell(torch.nn.RNNCell):
    """Drop-in `torch.nn.RNNCell`. As in torch, a wrong ``nonlinearity`` is refused by forward, with RuntimeError."""

    def forward(self, input, hx=None):
        return rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)


class RNN(torch.nn.RNN):
    """Drop-in `torch.nn.RNN`: every constructor option, PackedSequence input, torch's state_dict."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Dynamo refuses to trace any instance of torch.nn.RNN, GRU or LSTM unless allow_rnn is
        # set (torch's own forward calls the fused cuDNN entry point, which it cannot trace); this
        # subclass's forward is our traceable ops, so a model that holds one is made compilable.
        # The switch is global: torch's own RNN modules are then traced too ("experimental" in
        # torch), where they would otherwise break the graph.
        torch._dynamo.config.allow_rnn = True

    def forward(self, input, hx=None):
        weights = [getattr(self, name) for name in self._flat_weights_names]
        return rnn(input, hx, weights, nonlinearity=self.nonlinearity, num_layers=self.num_layers, bias=self.bias,
                   batch_first=self.batch_first, dropout=float(self.dropout), training=self.training,
                   bidirectional=self.bidirectional)
