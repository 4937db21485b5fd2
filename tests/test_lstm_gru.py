"""LSTM and GRU: gradcheck of the cells and the sequences, parity with torch.nn.LSTM / GRU for every
constructor option, packed sequences, the split recurrence (module and kernel level), the
persistent path against the per-step path, state_dict, errors, empty batches, autocast and
double backward. Parametrized over the two gated cells wherever the test allows it."""
from __future__ import annotations


import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence

from helpers import RecurrentCase, assert_close, assert_gradcheck, assert_matches, seeded
from tritonprop import backend
from tritonprop.kernels import recurrence
from tritonprop.ops.gru import GRU, GRUCell, gru, gru_cell
from tritonprop.ops.lstm import LSTM, LSTMCell, lstm, lstm_cell
from tritonprop.ops.reference import gru as reference_gru
from tritonprop.ops.reference import lstm as reference_lstm
from tritonprop.ops.reference import rnn as reference_rnn

# fp32 parity is checked in full precision (tests/conftest.py: strict_float32).
pytestmark = pytest.mark.usefixtures("strict_float32")

CELLS = ["lstm", "gru"]
GATES = {"lstm": 4, "gru": 3}
MODULES = {"lstm": (LSTM, torch.nn.LSTM), "gru": (GRU, torch.nn.GRU)}
CELL_MODULES = {"lstm": (LSTMCell, torch.nn.LSTMCell), "gru": (GRUCell, torch.nn.GRUCell)}
FUNCTIONALS = {"lstm": lstm, "gru": gru}
REFERENCES = {"lstm": reference_lstm.lstm, "gru": reference_gru.gru}


def _count(cell):
    """How many states the cell carries: (h, c) for the LSTM, h for the GRU."""
    return 2 if cell == "lstm" else 1


def _hx(cell, states):
    """The hx argument from a list of states: a tuple (h0, c0) for the LSTM, h0 for the GRU."""
    if states is None:
        return None
    return tuple(states) if cell == "lstm" else states[0]


def _finals(cell, finals):
    """The final states a forward returned, as a list."""
    return list(finals) if cell == "lstm" else [finals]


def _flat(out, finals):
    return torch.cat([out.reshape(-1)] + [f.reshape(-1) for f in finals])


SEQS = [
    RecurrentCase("plain"),
    RecurrentCase("no_bias", T=3, B=2, I=2, H=3, options=dict(bias=False)),
    RecurrentCase("bidirectional", T=2, B=2, I=2, H=2, options=dict(bidirectional=True)),
    RecurrentCase("all_combined", T=2, B=2, I=2, H=2, options=dict(num_layers=2, batch_first=True, bidirectional=True)),
]
IDS = [s.name for s in SEQS]


def _sequence_fn(cell, **options):
    """lstm(...) / gru(...) as a function of tensors only, its output and final states as one tensor."""
    def fn(x, *rest):
        n = _count(cell)
        out, finals = FUNCTIONALS[cell](x, _hx(cell, rest[:n]), list(rest[n:]), **options)
        return _flat(out, _finals(cell, finals))
    return fn


def _reference_fn(cell, **options):
    def fn(x, *rest):
        n = _count(cell)
        out, finals = REFERENCES[cell](x, _hx(cell, rest[:n]), list(rest[n:]), **options)
        return _flat(out, _finals(cell, finals))
    return fn


def _torch_fn(cell, **options):
    def fn(x, *rest):
        n = _count(cell)
        flags = (options.get("bias", True), options.get("num_layers", 1), 0.0, True,
                 options.get("bidirectional", False), options.get("batch_first", False))
        if cell == "lstm":
            out, h, c = torch._VF.lstm(x, tuple(rest[:n]), list(rest[n:]), *flags)
            return _flat(out, [h, c])
        out, h = torch._VF.gru(x, rest[0], list(rest[n:]), *flags)
        return _flat(out, [h])
    return fn


def _cell_tensors(cell, device, B=2, I=3, H=4, bias=True, batched=True, dtype=torch.float32):
    """x, [h (and c)], [w_ih, w_hh, b_ih, b_hh] of one step; unbatched: x (I,), states (H,)."""
    G = GATES[cell]
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, device=device).to(dtype).requires_grad_()
    states = [(torch.randn(*lead, H, device=device) * 0.5).to(dtype).requires_grad_() for _ in range(_count(cell))]
    weights = [(torch.randn(G * H, I, device=device) * 0.5).to(dtype).requires_grad_(),
               (torch.randn(G * H, H, device=device) * 0.5).to(dtype).requires_grad_()]
    if bias:
        weights += [torch.randn(G * H, device=device).to(dtype).requires_grad_() for _ in range(2)]
    return x, states, weights


def _cell_fn(cell, fns=None):
    """lstm_cell / gru_cell (or `fns[cell]`, one with the same signature) of tensors only, as one tensor."""
    fns = fns or {"lstm": lstm_cell, "gru": gru_cell}

    def fn(x, *rest):
        n = _count(cell)
        result = fns[cell](x, _hx(cell, rest[:n]), *rest[n:])
        return torch.cat([r.reshape(-1) for r in result]) if cell == "lstm" else result
    return fn


TORCH_CELLS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell}
REFERENCE_CELLS = {"lstm": reference_lstm.lstm_cell, "gru": reference_gru.gru_cell}


def _module_pair(cell, *args, **options):
    """(ours, torch's) with torch's initial weights loaded into ours."""
    ours_cls, theirs_cls = MODULES[cell]
    theirs = theirs_cls(*args, **options)
    ours = ours_cls(*args, **options)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _gradcheck_flat(fn, *tensors):
    """Fast-mode gradcheck of fn(*tensors) w.r.t. every tensor, through one flat leaf.

    Fast mode takes one finite difference per input tensor; with one flat input it perturbs
    x, the states and every weight at once along one random direction (every element has a
    random component), so it still checks every element's gradient, in a random projection, at
    the cost of one difference instead of up to nineteen: the interpreter makes each forward slow.
    """
    shapes = [t.shape for t in tensors]
    sizes = [t.numel() for t in tensors]
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).requires_grad_()

    def packed(v):
        return fn(*[part.view(shape) for part, shape in zip(v.split(sizes), shapes)])
    assert_gradcheck(packed, flat, fast_mode=True)


# ------------------------------------------------------------------------------------------------
# gradcheck (float64): the cells, the sequences over a grid of options, the full Jacobian
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_cell_input_states_and_every_weight(device, cell, batched):
    x, states, weights = _cell_tensors(cell, device, batched=batched)
    _gradcheck_flat(_cell_fn(cell), x, *states, *weights)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_cell_full_jacobian_unbatched_no_bias(device, cell):
    # One hidden unit, one feature, no bias: the full Jacobian costs two forwards per element.
    x, states, weights = _cell_tensors(cell, device, I=1, H=1, bias=False, batched=False)
    assert_gradcheck(_cell_fn(cell), x, *states, *weights)


# Every option alone in the default run; all combined (the costliest) under -m slow, where the
# default run checks the combination against torch instead (test_module_matches_torch_through_state_dict).
@pytest.mark.parametrize("seq", [pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.name == "all_combined" else [])
                                 for s in SEQS])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_sequence_x_states_and_every_weight(device, cell, seq):
    x, states, weights = seq.tensors(MODULES[cell][1], device, states=_count(cell))
    _gradcheck_flat(_sequence_fn(cell, **seq.kwargs), x, *states, *weights)


@pytest.mark.slow
@pytest.mark.parametrize("seq", SEQS, ids=IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_sequence_per_tensor(device, cell, seq):
    # One random projection per tensor: finer than the flat check for a small tensor (a bias).
    x, states, weights = seq.tensors(MODULES[cell][1], device, states=_count(cell))
    assert_gradcheck(_sequence_fn(cell, **seq.kwargs), x, *states, *weights, fast_mode=True)


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(), dict(bias=False), dict(bidirectional=True)],
                         ids=["plain", "no_bias", "bidirectional"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_sequence_full_jacobian_small(device, cell, options):
    # Two forwards per element: 10 to 30 s each under the interpreter (two bidirectional layers
    # would take minutes; the per-tensor fast mode above covers them).
    seq = RecurrentCase("tiny", T=2, B=1, I=1, H=2, options=options)
    x, states, weights = seq.tensors(MODULES[cell][1], device, states=_count(cell))
    assert_gradcheck(_sequence_fn(cell, **seq.kwargs), x, *states, *weights)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_split_recurrence(device, split, cell):
    # BPTT over several K splits and M tiles (H = 17: ragged last slices). The default run
    # checks the split BPTT in float64 against the reference's autograd at kernel level
    # (test_kernel_split_forward_and_backward_match_the_references).
    seq = RecurrentCase("split", T=2, B=1, I=2, H=17)
    x, states, weights = seq.tensors(MODULES[cell][1], device, states=_count(cell))
    _gradcheck_flat(_sequence_fn(cell), x, *states, *weights)


# ------------------------------------------------------------------------------------------------
# Parity with torch (through state_dict) and the references
# ------------------------------------------------------------------------------------------------


def _run_module(cell, module, x, states):
    """Forward with hx built from `states` (None: hx=None), then the gradients of a fixed random
    projection of the output and every final state w.r.t. x, the states given and every parameter."""
    x = x.detach().clone().requires_grad_()
    states = None if states is None else [s.detach().clone().requires_grad_() for s in states]
    out, finals = module(x, _hx(cell, states))
    finals = _finals(cell, finals)
    gen = torch.Generator().manual_seed(7)
    loss = sum((t * torch.randn(t.shape, generator=gen).to(t)).sum() for t in [out, *finals])
    grads = torch.autograd.grad(loss, [x, *(states or []), *module.parameters()])
    return out, finals, grads


# (name, constructor options, hx given, unbatched input)
MODULE_CASES = [
    ("default", dict(), True, False),
    ("hx_none", dict(), False, False),
    ("num_layers", dict(num_layers=2), True, False),
    ("no_bias", dict(bias=False), True, False),
    ("batch_first", dict(batch_first=True), True, False),
    ("dropout_eval", dict(num_layers=2, dropout=0.5), True, False),  # eval mode: dropout does nothing
    ("bidirectional", dict(bidirectional=True), True, False),
    ("unbatched", dict(), True, True),
    ("unbatched_hx_none_batch_first_bidirectional", dict(batch_first=True, bidirectional=True), False, True),
    ("all_combined", dict(num_layers=2, bias=False, batch_first=True, dropout=0.3, bidirectional=True), True, False),
]


@pytest.mark.parametrize("name,options,hx_given,unbatched", MODULE_CASES, ids=[c[0] for c in MODULE_CASES])
@pytest.mark.parametrize("cell", CELLS)
def test_module_matches_torch_through_state_dict(device, cell, name, options, hx_given, unbatched):
    ours, theirs = _module_pair(cell, 3, 5, **options)
    ours, theirs = ours.to(device), theirs.to(device)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    if options.get("dropout"):
        ours.eval()
        theirs.eval()
    seq = RecurrentCase("module", T=3, B=3, I=3, H=5, options=options)
    x, states, _ = seq.tensors(MODULES[cell][1], device, states=_count(cell))
    if unbatched:
        x = x[0] if options.get("batch_first") else x[:, 0]
        states = [s[:, 0] for s in states]
    if not hx_given:
        states = None
    out, finals, grads = _run_module(cell, ours, x, states)
    e_out, e_finals, e_grads = _run_module(cell, theirs, x, states)
    assert_close(out, e_out, name="output")
    assert out.stride() == e_out.stride(), "output layout differs from torch's"
    for k, (f, e) in enumerate(zip(finals, e_finals)):
        assert_close(f, e, name=f"final state {k} (h_n, c_n)")
    assert len(grads) == len(e_grads)
    for k, (g, e) in enumerate(zip(grads, e_grads)):
        assert_close(g, e, name=f"gradient {k} (x, states, then parameters)")


@pytest.mark.parametrize("cell", CELLS)
def test_functional_reads_strided_and_expanded_weights(device, cell):
    """A transposed W_ih, a W_hh of every other column and a b_ih expanded from one element (stride
    0) give torch's output, and gradients that reach the tensors they are views of."""
    T, B, I, H, G = 3, 2, 3, 4, GATES[cell]
    x = torch.randn(T, B, I, device=device, dtype=torch.float64)
    states = [torch.randn(1, B, H, device=device, dtype=torch.float64) for _ in range(_count(cell))]
    bases = [torch.randn(I, G * H), torch.randn(G * H, 2 * H), torch.randn(1), torch.randn(G * H)]
    ours_bases = [b.to(device, torch.float64).requires_grad_() for b in bases]
    torch_bases = [b.to(device, torch.float64).requires_grad_() for b in bases]

    def views(b):
        return [b[0].t(), b[1][:, ::2], b[2].expand(G * H), b[3]]

    assert [v.stride() for v in views(ours_bases)][1:3] == [(2 * H, 2), (0,)]
    out = _sequence_fn(cell)(x, *states, *views(ours_bases))
    expected = _torch_fn(cell)(x, *states, *[v.contiguous() for v in views(torch_bases)])
    assert_close(out, expected)
    grads = torch.autograd.grad(out.sum(), ours_bases)
    e_grads = torch.autograd.grad(expected.sum(), torch_bases)
    for k, (g, e) in enumerate(zip(grads, e_grads)):
        assert_close(g, e, name=f"gradient of weight base {k}")


@pytest.mark.parametrize("seq", [SEQS[0], SEQS[3]], ids=lambda s: s.name)
@pytest.mark.parametrize("cell", CELLS)
def test_functional_matches_reference_and_torch_fp32(device, cell, seq):
    x, states, weights = seq.tensors(MODULES[cell][1], device, states=_count(cell))
    oracles = {"reference": _reference_fn(cell, **seq.kwargs), "torch": _torch_fn(cell, **seq.kwargs)}
    assert_matches(_sequence_fn(cell, **seq.kwargs), oracles, x, *states, *weights)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_in_training_is_seeded_and_matches_the_reference(device, cell):
    # torch's own dropout mask cannot be matched; the reference draws the kernel's mask from the seed.
    seq = RecurrentCase("dropout", T=2, B=2, I=3, H=4, options=dict(num_layers=2, dropout=0.5))
    x, states, weights = seq.tensors(MODULES[cell][1], device, states=_count(cell))
    options = dict(num_layers=2, dropout=0.5, training=True)
    ours, reference = _sequence_fn(cell, **options), _reference_fn(cell, **options)
    assert_matches(seeded(ours, 3), {"reference": seeded(reference, 3)}, x, *states, *weights)

    torch.manual_seed(3)
    first = ours(x, *states, *weights)
    torch.manual_seed(3)
    again = ours(x, *states, *weights)
    assert torch.equal(first, again), "dropout must be reproducible under torch.manual_seed"
    other = ours(x, *states, *weights)  # the next seed from the generator: another mask
    assert not torch.equal(first, other), "two training calls drew the same mask"
    plain = _sequence_fn(cell, num_layers=2)(x, *states, *weights)
    assert not torch.allclose(first, plain), "dropout changed nothing"
    evaluated = _sequence_fn(cell, num_layers=2, dropout=0.5, training=False)(x, *states, *weights)
    assert torch.equal(evaluated, plain), "training=False must ignore dropout"


@pytest.mark.parametrize("cell", CELLS)
def test_module_dropout_train_and_eval(device, cell):
    ours, theirs = _module_pair(cell, 3, 4, num_layers=2, dropout=0.5)
    ours, theirs = ours.to(device), theirs.to(device)
    x = torch.randn(2, 2, 3, device=device)
    torch.manual_seed(5)
    out, _ = ours(x)
    torch.manual_seed(5)
    again, _ = ours(x)
    assert torch.equal(out, again), "dropout must be reproducible under torch.manual_seed"
    ours.eval()
    theirs.eval()
    plain, _ = ours(x)
    assert not torch.allclose(out, plain), "dropout changed nothing in training mode"
    assert_close(plain, theirs(x)[0], name="eval mode vs torch")


@pytest.mark.parametrize("cell", CELLS)
def test_cell_matches_torch_and_reference(device, cell):
    x, states, weights = _cell_tensors(cell, device, B=3, I=5, H=6)
    oracles = {"torch": _cell_fn(cell, TORCH_CELLS), "reference": _cell_fn(cell, REFERENCE_CELLS)}
    assert_matches(_cell_fn(cell), oracles, x, *states, *weights)


@pytest.mark.parametrize("present", ["b_ih", "b_hh"])
@pytest.mark.parametrize("cell", CELLS)
def test_cell_with_one_bias_matches_torch(device, cell, present):
    x, states, (w_ih, w_hh, b, _) = _cell_tensors(cell, device)
    biases = (b, None) if present == "b_ih" else (None, b)
    ours = _cell_fn(cell)
    theirs = _cell_fn(cell, TORCH_CELLS)
    assert_matches(lambda *a: ours(*a, *biases), {"torch": lambda *a: theirs(*a, *biases)}, x, *states, w_ih, w_hh)


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("cell", CELLS)
def test_cell_module_matches_torch(device, cell, batched, hx_given):
    ours_cls, theirs_cls = CELL_MODULES[cell]
    theirs = theirs_cls(3, 4).to(device)
    ours = ours_cls(3, 4).to(device)
    ours.load_state_dict(theirs.state_dict())
    x, states, _ = _cell_tensors(cell, device, I=3, H=4, batched=batched)
    results = []
    for module in (ours, theirs):
        leaves = [t.detach().clone().requires_grad_() for t in ((x, *states) if hx_given else (x,))]
        out = module(leaves[0], _hx(cell, leaves[1:]) if hx_given else None)
        outs = list(out) if cell == "lstm" else [out]
        gen = torch.Generator().manual_seed(11)
        loss = sum((o * torch.randn(o.shape, generator=gen).to(o)).sum() for o in outs)
        results.append((outs, torch.autograd.grad(loss, [*leaves, *module.parameters()])))
    (outs, grads), (e_outs, e_grads) = results
    for k, (o, e) in enumerate(zip(outs, e_outs)):
        assert_close(o, e, name=f"new state {k}")
    for k, (g, e) in enumerate(zip(grads, e_grads)):
        assert_close(g, e, name=f"gradient {k} (input, states, then parameters)")


# ------------------------------------------------------------------------------------------------
# Packed sequences
# ------------------------------------------------------------------------------------------------


def _packed_run(cell, module, seqs, hx_values, packer, lengths):
    """Forward of `module` on `seqs` packed by `packer` (enforce_sorted=False), h0/c0 given; the
    gradients of the sequences (or the padded batch), the states and every parameter. The loss
    uses h_n but not c_n, so that the LSTM's BPTT starts from dc_n = None."""
    if packer == "pack_sequence":
        leaves = [s.clone().requires_grad_() for s in seqs]
        packed = pack_sequence(leaves, enforce_sorted=False)
    else:
        leaves = [pad_sequence(seqs, batch_first=True).requires_grad_()]
        packed = pack_padded_sequence(leaves[0], lengths, batch_first=True, enforce_sorted=False)
    states = [v.clone().requires_grad_() for v in hx_values]
    out, finals = module(packed, _hx(cell, states))
    assert isinstance(out, PackedSequence)
    finals = _finals(cell, finals)
    padded, out_lengths = pad_packed_sequence(out, batch_first=True)
    assert out_lengths.tolist() == list(lengths)
    loss = (padded * torch.arange(padded.numel(), device=padded.device).reshape(padded.shape).sin()).sum()
    loss = loss + finals[0].pow(2).sum()
    grads = torch.autograd.grad(loss, [*leaves, *states, *module.parameters()])
    return out, finals, grads


def _assert_packed_match(ours_result, theirs_result):
    (out, finals, grads), (e_out, e_finals, e_grads) = ours_result, theirs_result
    assert torch.equal(out.batch_sizes, e_out.batch_sizes)
    assert torch.equal(out.sorted_indices, e_out.sorted_indices)
    assert torch.equal(out.unsorted_indices, e_out.unsorted_indices)
    assert_close(out.data, e_out.data, name="packed output")
    for k, (f, e) in enumerate(zip(finals, e_finals)):
        assert_close(f, e, name=f"final state {k} (original batch order)")
    for k, (g, e) in enumerate(zip(grads, e_grads)):
        assert_close(g, e, name=f"gradient {k} (sequences, states, parameters)")


@pytest.mark.parametrize("packer", ["pack_sequence", "pack_padded_sequence"])
@pytest.mark.parametrize("cell", CELLS)
def test_packed_sequence_two_layers_bidirectional_matches_torch(device, cell, packer):
    ours, theirs = _module_pair(cell, 3, 4, num_layers=2, bidirectional=True)
    ours, theirs = ours.to(device), theirs.to(device)
    lengths = [3, 4, 1, 3]  # unsorted, with a tie
    seqs = [torch.randn(n, 3, device=device) for n in lengths]
    hx_values = [torch.linspace(-1, 1, 4 * 4 * 4, device=device).reshape(4, 4, 4) * (k + 1) / 2
                 for k in range(_count(cell))]
    _assert_packed_match(_packed_run(cell, ours, seqs, hx_values, packer, lengths),
                         _packed_run(cell, theirs, seqs, hx_values, packer, lengths))


# ------------------------------------------------------------------------------------------------
# The split recurrence: several M tiles and K splits, ragged, against torch and the references
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("H", [pytest.param(17, marks=pytest.mark.slow), pytest.param(20, marks=pytest.mark.slow), 37])
@pytest.mark.parametrize("cell", CELLS)
def test_split_recurrence_matches_torch_with_packed_input(device, split, cell, H):
    # H = 17 and 20 take two K slices of 16, the last ragged; H = 37 three, and two or three
    # M tiles of 64 gate rows forward (the default run's case).
    ours, theirs = _module_pair(cell, 2, H, bidirectional=True)
    ours, theirs = ours.to(device), theirs.to(device)
    forward_plan = recurrence.plan(recurrence.CELLS[cell], torch.float32, H, 3, backward=False)
    backward_plan = recurrence.plan(recurrence.CELLS[cell], torch.float32, H, 3, backward=True)
    assert forward_plan.SPLITS > 1 and backward_plan.SPLITS > 1, "the fixture must split K"
    lengths = [2, 1, 2]
    seqs = [torch.randn(n, 2, device=device) for n in lengths]
    hx_values = [torch.randn(2, 3, H, device=device) * 0.5 for _ in range(_count(cell))]
    _assert_packed_match(_packed_run(cell, ours, seqs, hx_values, "pack_sequence", lengths),
                         _packed_run(cell, theirs, seqs, hx_values, "pack_sequence", lengths))


def _layer_tensors(cell, device, T, B, I, H, D, dtype):
    """x, h0, c0 (LSTM, else None), weights per direction, lengths (int32: T, 1, T - 1, ... unsorted)."""
    G = recurrence.GATES[recurrence.CELLS[cell]]
    x = torch.randn(T, B, I, device=device, dtype=dtype)
    h0 = torch.randn(D, B, H, device=device, dtype=dtype) * 0.5
    c0 = torch.randn(D, B, H, device=device, dtype=dtype) if cell == "lstm" else None
    weights = [tuple(torch.randn(*shape, device=device, dtype=dtype) * 0.3
                     for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,))) for _ in range(D)]
    lengths = torch.tensor([(T, 1, max(T - 1, 1))[b % 3] for b in range(B)], device=device, dtype=torch.int32)
    return x, h0, c0, weights, lengths


def _reference_layer(cell, x, h0, c0, weights, lengths):
    """(output (T, B, D*H), h_n (D, B, H), c_n or None) of one layer, by the references."""
    outs, hs, cs = [], [], []
    for d, w in enumerate(weights):
        if cell == "lstm":
            out, (h, c) = reference_lstm.lstm_layer(x, h0[d], c0[d], *w, reverse=d == 1, lengths=lengths)
            cs.append(c)
        elif cell == "gru":
            out, h = reference_gru.gru_layer(x, h0[d], *w, reverse=d == 1, lengths=lengths)
        else:
            out, h = reference_rnn.rnn_layer(x, h0[d], *w, cell[4:], reverse=d == 1, lengths=lengths)
        outs.append(out)
        hs.append(h)
    return torch.cat(outs, 2), torch.stack(hs), (torch.stack(cs) if cs else None)


# The default run checks the split through the modules (test_split_recurrence_matches_torch_with_packed_input).
@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_kernel_split_forward_and_backward_match_the_references(device, cell):
    # float64, so that any indexing error in the tiling shows far above rounding.
    # H = 37 over 16-wide K slices: three splits, the last ragged; the gated cells' 3H or 4H
    # gate rows also take two or three M tiles of 64 forward.
    T, B, I, H, D = 2, 3, 2, 37, 2
    tiles = dict(target_programs=64, max_block_k=16)
    kind = recurrence.CELLS[cell]
    for backward in (False, True):
        p = recurrence.plan(kind, torch.float64, H, B, backward=backward, **tiles)
        assert p.SPLITS > 1 and p.U_TILES > 1, p
        assert p.M_TILES > 1 or cell == "rnn_tanh" or backward, p
    x, h0, c0, weights, lengths = _layer_tensors(cell, device, T, B, I, H, D, torch.float64)
    hidden, h_n, c_n, cells, gates = recurrence.forward(cell, x, h0, c0, weights, lengths, tiles=tiles)

    leaves = [t.clone().requires_grad_() for t in (x, h0, *([c0] if c0 is not None else []))]
    w_leaves = [tuple(w.clone().requires_grad_() for w in direction) for direction in weights]
    e_out, e_h_n, e_c_n = _reference_layer(cell, leaves[0], leaves[1], leaves[2] if c0 is not None else None,
                                           w_leaves, lengths)
    assert_close(hidden[1:T + 1], e_out, name="output")
    assert_close(h_n, e_h_n, name="h_n")
    if cell == "lstm":
        assert_close(c_n, e_c_n, name="c_n")

    gen = torch.Generator().manual_seed(5)
    dy = torch.randn(T, B, D * H, generator=gen, dtype=torch.float64).to(device)
    dh_n = torch.randn(D, B, H, generator=gen, dtype=torch.float64).to(device)
    dc_n = torch.randn(D, B, H, generator=gen, dtype=torch.float64).to(device) if cell == "lstm" else None
    dx, dh0, dc0, grads = recurrence.backward(cell, dy, dh_n, dc_n, x, hidden, cells, gates, weights, lengths,
                                              tiles=tiles)
    loss = (e_out * dy).sum() + (e_h_n * dh_n).sum() + ((e_c_n * dc_n).sum() if cell == "lstm" else 0)
    flat_w = [w for direction in w_leaves for w in direction]
    expected = torch.autograd.grad(loss, leaves + flat_w)
    got = [dx, dh0, *([dc0] if cell == "lstm" else []), *(g for direction in grads for g in direction)]
    names = ["dx", "dh0", *(["dc0"] if cell == "lstm" else []),
             *(f"{n} (direction {d})" for d in range(D) for n in ("dw_ih", "dw_hh", "db_ih", "db_hh"))]
    assert len(got) == len(expected)
    for name, g, e in zip(names, got, expected):
        assert_close(g, e, name=name)


# ------------------------------------------------------------------------------------------------
# The persistent kernel against the per-step launches
# ------------------------------------------------------------------------------------------------


def _both_paths(cell, device, tiles, T, B, I, H, D, dtype=torch.float32):
    """Forward and BPTT outputs of recurrence.forward / backward on each path, same inputs."""
    x, h0, c0, weights, lengths = _layer_tensors(cell, device, T, B, I, H, D, dtype)
    gen = torch.Generator().manual_seed(9)
    dy = torch.randn(T, B, D * H, generator=gen).to(device, dtype)
    dh_n = torch.randn(D, B, H, generator=gen).to(device, dtype)
    dc_n = torch.randn(D, B, H, generator=gen).to(device, dtype) if cell == "lstm" else None
    results = {}
    for path in (recurrence.PERSISTENT, recurrence.PER_STEP):
        forward = recurrence.forward(cell, x, h0, c0, weights, lengths, path=path, tiles=tiles)
        hidden, _, _, cells, gates = forward
        dx, dh0, dc0, grads = recurrence.backward(cell, dy, dh_n, dc_n, x, hidden.clone(), cells.clone(),
                                                  gates.clone(), weights, lengths, path=path, tiles=tiles)
        results[path] = list(forward) + [dx, dh0, dc0] + [g for direction in grads for g in direction]
    return results[recurrence.PERSISTENT], results[recurrence.PER_STEP]


def _assert_identical(persistent, per_step):
    names = ["hidden", "h_n", "c_n", "cells", "gates", "dx", "dh0", "dc0"] + [
        f"weight gradient {k}" for k in range(len(persistent) - 8)]
    for name, a, b in zip(names, persistent, per_step):
        if b is None:
            assert a is None, name
            continue
        assert torch.equal(a, b), f"{name}: persistent and per-step differ, max {(a - b).abs().max().item():.3e}"


@pytest.mark.parametrize("D", [1, 2], ids=["one_direction", "bidirectional"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_persistent_path_equals_per_step_path(device, cell, D):
    T, B, I, H = 2, 3, 2, 8
    tiles = dict(target_programs=1)
    for backward in (False, True):
        assert recurrence.plan(recurrence.CELLS[cell], torch.float32, H, B, backward=backward,
                               **tiles).programs == 1, "the interpreter runs the persistent kernel on one program only"
    _assert_identical(*_both_paths(cell, device, tiles, T, B, I, H, D))


@pytest.mark.skipif(not backend.interpreting(), reason="the interpreter's refusal")
def test_persistent_path_with_several_programs_is_refused_under_the_interpreter():
    tiles = dict(target_programs=8, max_block_k=16)
    assert recurrence.plan(recurrence.LSTM, torch.float32, 20, 2, backward=False, **tiles).programs > 1
    x, h0, c0, weights, _ = _layer_tensors("lstm", "cpu", 2, 2, 2, 20, 1, torch.float32)
    with pytest.raises(ValueError, match="persistent kernel needs all .* programs resident"):
        recurrence.forward("lstm", x, h0, c0, weights, path="persistent", tiles=tiles)
    with pytest.raises(ValueError, match="path must be"):
        recurrence.forward("lstm", x, h0, c0, weights, path="cooperative")


@pytest.mark.skipif(not torch.cuda.is_available() or backend.interpreting(),
                    reason="the persistent kernel runs several programs only on a GPU, compiled")
@pytest.mark.parametrize("D", [1, 2], ids=["one_direction", "bidirectional"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_persistent_path_equals_per_step_path_on_gpu_with_several_programs(cell, D):
    T, B, I, H = 4, 5, 3, 40
    tiles = dict(target_programs=8, max_block_k=16)
    for backward in (False, True):
        assert recurrence.plan(recurrence.CELLS[cell], torch.float32, H, B, backward=backward,
                               **tiles).programs > 1
    _assert_identical(*_both_paths(cell, torch.device("cuda"), tiles, T, B, I, H, D))


# ------------------------------------------------------------------------------------------------
# state_dict, both ways
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["module", "cell"])
@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_loads_both_ways(device, cell, kind):
    ours_cls, theirs_cls = (MODULES if kind == "module" else CELL_MODULES)[cell]
    options = dict(num_layers=2, bidirectional=True) if kind == "module" else {}
    x = torch.randn(*((2, 2, 3) if kind == "module" else (2, 3)), device=device)
    for source_cls, target_cls in ((theirs_cls, ours_cls), (ours_cls, theirs_cls)):
        source = source_cls(3, 4, **options).to(device)
        target = target_cls(3, 4, **options).to(device)
        result = target.load_state_dict(source.state_dict())
        assert not result.missing_keys and not result.unexpected_keys
        assert source.state_dict().keys() == target.state_dict().keys()
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), key
        got, expected = target(x), source(x)
        got = got[0] if kind == "module" else got
        expected = expected[0] if kind == "module" else expected
        if cell == "lstm" and kind == "cell":
            got, expected = got[0], expected[0]
        assert_close(got, expected, name=f"{target_cls.__module__}.{target_cls.__name__} after loading")


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors that name the argument
# ------------------------------------------------------------------------------------------------


def _lstm():
    return LSTM(3, 4, num_layers=2)


def _gru():
    return GRU(3, 4, num_layers=2)


def _x():
    return torch.randn(5, 2, 3)


def _lstm_weights():
    return [torch.randn(16, 3), torch.randn(16, 4), torch.randn(16), torch.randn(16)]


BAD = [
    # LSTM module / functional
    ("lstm: wrong h0 shape", lambda: _lstm()(_x(), (torch.randn(1, 2, 4), torch.randn(2, 2, 4))), RuntimeError,
     r"lstm: Expected hx size \(2, 2, 4\), got \[1, 2, 4\]"),
    ("lstm: wrong c0 shape", lambda: _lstm()(_x(), (torch.randn(2, 2, 4), torch.randn(2, 2, 5))), RuntimeError,
     r"lstm: Expected cx size \(2, 2, 4\), got \[2, 2, 5\]"),
    ("lstm: wrong h0 batch", lambda: _lstm()(_x(), (torch.randn(2, 3, 4), torch.randn(2, 3, 4))), RuntimeError,
     r"Expected hx size \(2, 2, 4\)"),
    ("lstm: 2-D states with batched input", lambda: _lstm()(_x(), (torch.randn(2, 4), torch.randn(2, 4))),
     RuntimeError, r"hx and cx should also be 3-D"),
    ("lstm: hx not a tuple", lambda: _lstm()(_x(), torch.randn(2, 2, 4)), RuntimeError,
     r"lstm: hx must be a tuple of two tensors \(h, c\), got Tensor"),
    ("lstm: hx a 1-tuple", lambda: _lstm()(_x(), (torch.randn(2, 2, 4),)), RuntimeError,
     r"hx must be a tuple of two tensors.*length 1"),
    ("lstm: 4-D input", lambda: _lstm()(torch.randn(1, 5, 2, 3)), ValueError, r"lstm: Expected input to be 2D or 3D"),
    ("lstm: wrong feature size", lambda: _lstm()(torch.randn(5, 2, 6)), RuntimeError,
     r"input\.size\(-1\).*Expected 3, got 6"),
    ("lstm: empty sequence", lambda: _lstm()(torch.randn(0, 2, 3)), RuntimeError, r"sequence length"),
    ("lstm: input dtype", lambda: _lstm()(_x().double()), ValueError,
     r"input dtype \(torch.float64\) does not match weights\[0\]"),
    ("lstm: integer input", lambda: _lstm()(torch.ones(5, 2, 3, dtype=torch.long)), ValueError,
     r"input dtype \(torch.int64\) does not match weights\[0\]"),
    ("lstm: h0 dtype", lambda: _lstm()(_x(), (torch.randn(2, 2, 4).double(), torch.randn(2, 2, 4))), RuntimeError,
     r"input dtype \(torch.float32\) does not match hx dtype \(torch.float64\)"),
    ("lstm: c0 dtype", lambda: _lstm()(_x(), (torch.randn(2, 2, 4), torch.randn(2, 2, 4).double())), RuntimeError,
     r"does not match cx dtype \(torch.float64\)"),
    ("lstm: wrong w_hh shape", lambda: lstm(_x(), None, _lstm_weights()[:1] + [torch.randn(16, 5)] +
                                            _lstm_weights()[2:]), RuntimeError, r"weights\[1\].*\[16, 4\].*\[16, 5\]"),
    ("lstm: wrong bias shape", lambda: lstm(_x(), None, _lstm_weights()[:2] + [torch.randn(12), torch.randn(16)]),
     RuntimeError, r"weights\[2\].*should have size \[16\], got \[12\]"),
    ("lstm: too few weights", lambda: lstm(_x(), None, _lstm_weights()[:2]), ValueError,
     r"lstm: weights must be a list of 4"),
    ("lstm: proj_size", lambda: LSTM(3, 4, proj_size=2), NotImplementedError, r"lstm: proj_size"),
    ("lstm: bad dropout", lambda: lstm(_x(), None, _lstm_weights(), dropout=-0.1), ValueError, r"lstm: dropout"),
    # GRU module / functional
    ("gru: wrong h0 shape", lambda: _gru()(_x(), torch.randn(1, 2, 4)), RuntimeError,
     r"gru: Expected hx size \(2, 2, 4\), got \[1, 2, 4\]"),
    ("gru: 3-D h0 with unbatched input", lambda: _gru()(torch.randn(5, 3), torch.randn(2, 1, 4)), RuntimeError,
     r"hx should also be 2-D"),
    ("gru: hx a tuple", lambda: _gru()(_x(), (torch.randn(2, 2, 4),)), TypeError, r"gru: hx must be a torch.Tensor"),
    ("gru: wrong feature size", lambda: _gru()(torch.randn(5, 2, 6)), RuntimeError,
     r"input\.size\(-1\).*Expected 3, got 6"),
    ("gru: 1-D input", lambda: _gru()(torch.randn(3)), ValueError, r"gru: Expected input to be 2D or 3D, got 1D"),
    ("gru: input dtype", lambda: _gru()(_x().double()), ValueError,
     r"input dtype \(torch.float64\) does not match weights\[0\]"),
    ("gru: h0 dtype", lambda: _gru()(_x(), torch.randn(2, 2, 4).double()), RuntimeError,
     r"does not match hx dtype \(torch.float64\)"),
    ("gru: LSTM-shaped w_hh", lambda: gru(_x(), None, _lstm_weights()), RuntimeError,
     r"gru: weights\[1\] \(w_hh of layer 0\) must be \(3 \* hidden_size, hidden_size\)"),
    # Cells
    ("lstm_cell: hx not a tuple", lambda: LSTMCell(3, 4)(torch.randn(2, 3), torch.randn(2, 4)), TypeError,
     r"lstm_cell: hx must be a tuple"),
    ("lstm_cell: wrong c size", lambda: LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 5))),
     RuntimeError, r"lstm_cell: hx\[1\] has inconsistent hidden_size: got 5"),
    ("lstm_cell: wrong h batch", lambda: LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(3, 4), torch.randn(2, 4))),
     RuntimeError, r"batch size 2 doesn't match hx\[0\] batch size 3"),
    ("lstm_cell: wrong feature size", lambda: LSTMCell(3, 4)(torch.randn(2, 5)), RuntimeError,
     r"lstm_cell: input has inconsistent input_size: got 5 expected 3"),
    ("lstm_cell: 3-D input", lambda: LSTMCell(3, 4)(torch.randn(1, 2, 3)), ValueError, r"input.*1D or 2D"),
    ("lstm_cell: c dtype", lambda: LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 4).double())),
     RuntimeError, r"does not match hx\[1\] dtype \(torch.float64\)"),
    ("lstm_cell: GRU-shaped weights", lambda: lstm_cell(torch.randn(2, 3), None, torch.randn(12, 3),
                                                        torch.randn(12, 4)), RuntimeError,
     r"lstm_cell: expected w_ih \(4 \* hidden_size, input_size\).*got w_ih of size \[12, 3\]"),
    ("gru_cell: wrong hx size", lambda: GRUCell(3, 4)(torch.randn(2, 3), torch.randn(2, 5)), RuntimeError,
     r"gru_cell: hx has inconsistent hidden_size: got 5"),
    ("gru_cell: 2-D hx with unbatched input", lambda: GRUCell(3, 4)(torch.randn(3), torch.randn(1, 4)), RuntimeError,
     r"gru_cell: hx must have as many dims as input"),
    ("gru_cell: wrong bias", lambda: gru_cell(torch.randn(2, 3), None, torch.randn(12, 3), torch.randn(12, 4),
                                              torch.randn(16), torch.randn(12)), RuntimeError,
     r"gru_cell: expected b_ih of size \[12\]"),
    ("gru_cell: integer input", lambda: GRUCell(3, 4)(torch.ones(2, 3, dtype=torch.long)), RuntimeError,
     r"does not match w_ih dtype"),
]


@pytest.mark.parametrize("case,call,error,match", BAD, ids=[c[0] for c in BAD])
def test_bad_input_names_the_argument(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


# The same bad input to torch, for every case where torch raises a type a caller would catch: the
# exception types must agree. Left out: the cases torch accepts (proj_size; a float64 c with
# float32 input to LSTMCell; a w_hh of the wrong width to torch._VF.lstm), those where torch
# fails by accident of its implementation (IndexError for a 1-tuple hx of nn.LSTM,
# AttributeError for a tuple hx of nn.GRU, an internal MatrixRef RuntimeError for a short weight
# list, where ours raises ValueError as rnn's does).
TORCH_BAD = {
    "lstm_cell: hx not a tuple": lambda: torch.nn.LSTMCell(3, 4)(torch.randn(2, 3), torch.randn(2, 4)),
    "lstm: wrong h0 shape": lambda: torch.nn.LSTM(3, 4, num_layers=2)(_x(), (torch.randn(1, 2, 4),
                                                                             torch.randn(2, 2, 4))),
    "lstm: wrong c0 shape": lambda: torch.nn.LSTM(3, 4, num_layers=2)(_x(), (torch.randn(2, 2, 4),
                                                                             torch.randn(2, 2, 5))),
    "lstm: wrong h0 batch": lambda: torch.nn.LSTM(3, 4, num_layers=2)(_x(), (torch.randn(2, 3, 4),
                                                                             torch.randn(2, 3, 4))),
    "lstm: 2-D states with batched input": lambda: torch.nn.LSTM(3, 4, num_layers=2)(
        _x(), (torch.randn(2, 4), torch.randn(2, 4))),
    "lstm: 4-D input": lambda: torch.nn.LSTM(3, 4, num_layers=2)(torch.randn(1, 5, 2, 3)),
    "lstm: wrong feature size": lambda: torch.nn.LSTM(3, 4, num_layers=2)(torch.randn(5, 2, 6)),
    "lstm: empty sequence": lambda: torch.nn.LSTM(3, 4, num_layers=2)(torch.randn(0, 2, 3)),
    "lstm: input dtype": lambda: torch.nn.LSTM(3, 4, num_layers=2)(_x().double()),
    "lstm: integer input": lambda: torch.nn.LSTM(3, 4, num_layers=2)(torch.ones(5, 2, 3, dtype=torch.long)),
    "lstm: h0 dtype": lambda: torch.nn.LSTM(3, 4, num_layers=2)(_x(), (torch.randn(2, 2, 4).double(),
                                                                       torch.randn(2, 2, 4))),
    "lstm: c0 dtype": lambda: torch.nn.LSTM(3, 4, num_layers=2)(_x(), (torch.randn(2, 2, 4),
                                                                       torch.randn(2, 2, 4).double())),
    "lstm: hx not a tuple": lambda: torch.nn.LSTM(3, 4, num_layers=2)(_x(), torch.randn(2, 2, 4)),
    "lstm: wrong bias shape": lambda: torch._VF.lstm(_x(), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)),
                                                     _lstm_weights()[:2] + [torch.randn(12), torch.randn(16)],
                                                     True, 1, 0.0, True, False, False),
    "lstm: bad dropout": lambda: torch.nn.LSTM(3, 4, dropout=-0.1),
    "gru: wrong h0 shape": lambda: torch.nn.GRU(3, 4, num_layers=2)(_x(), torch.randn(1, 2, 4)),
    "gru: 3-D h0 with unbatched input": lambda: torch.nn.GRU(3, 4, num_layers=2)(torch.randn(5, 3),
                                                                                 torch.randn(2, 1, 4)),
    "gru: 1-D input": lambda: torch.nn.GRU(3, 4, num_layers=2)(torch.randn(3)),
    "gru: input dtype": lambda: torch.nn.GRU(3, 4, num_layers=2)(_x().double()),
    "gru: wrong feature size": lambda: torch.nn.GRU(3, 4, num_layers=2)(torch.randn(5, 2, 6)),
    "gru: h0 dtype": lambda: torch.nn.GRU(3, 4, num_layers=2)(_x(), torch.randn(2, 2, 4).double()),
    "gru: LSTM-shaped w_hh": lambda: torch._VF.gru(_x(), torch.zeros(1, 2, 4), _lstm_weights(), True, 1, 0.0, True,
                                                   False, False),
    "lstm_cell: wrong c size": lambda: torch.nn.LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4),
                                                                                  torch.randn(2, 5))),
    "lstm_cell: wrong h batch": lambda: torch.nn.LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(3, 4),
                                                                                   torch.randn(2, 4))),
    "lstm_cell: wrong feature size": lambda: torch.nn.LSTMCell(3, 4)(torch.randn(2, 5)),
    "lstm_cell: 3-D input": lambda: torch.nn.LSTMCell(3, 4)(torch.randn(1, 2, 3)),
    "lstm_cell: GRU-shaped weights": lambda: torch.lstm_cell(torch.randn(2, 3), (torch.randn(2, 4),
                                                                                torch.randn(2, 4)),
                                                             torch.randn(12, 3), torch.randn(12, 4)),
    "gru_cell: wrong hx size": lambda: torch.nn.GRUCell(3, 4)(torch.randn(2, 3), torch.randn(2, 5)),
    "gru_cell: 2-D hx with unbatched input": lambda: torch.nn.GRUCell(3, 4)(torch.randn(3), torch.randn(1, 4)),
    "gru_cell: wrong bias": lambda: torch.gru_cell(torch.randn(2, 3), torch.randn(2, 4), torch.randn(12, 3),
                                                   torch.randn(12, 4), torch.randn(16), torch.randn(12)),
    "gru_cell: integer input": lambda: torch.nn.GRUCell(3, 4)(torch.ones(2, 3, dtype=torch.long)),
}


@pytest.mark.parametrize("case", list(TORCH_BAD))
def test_errors_have_torchs_type(case):
    error = next(c[2] for c in BAD if c[0] == case)
    with pytest.raises(error):
        TORCH_BAD[case]()


# ------------------------------------------------------------------------------------------------
# Empty batch, autocast, double backward
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx_none"])
@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch_sequence_matches_torch(device, cell, hx_given):
    ours, theirs = _module_pair(cell, 3, 4, num_layers=2, bidirectional=True)
    ours, theirs = ours.to(device), theirs.to(device)
    x = torch.randn(5, 0, 3, device=device)
    states = [torch.randn(4, 0, 4, device=device) for _ in range(_count(cell))] if hx_given else None
    out, finals, grads = _run_module(cell, ours, x, states)
    e_out, e_finals, e_grads = _run_module(cell, theirs, x, states)
    assert out.shape == e_out.shape == (5, 0, 8)
    assert [f.shape for f in finals] == [f.shape for f in e_finals] == [(4, 0, 4)] * _count(cell)
    assert len(grads) == len(e_grads)
    for k, (g, e) in enumerate(zip(grads, e_grads)):
        assert_close(g, e, name=f"gradient {k} (x, states, parameters): zeros of the right shape")


@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch_cell_matches_torch(device, cell):
    ours_cls, theirs_cls = CELL_MODULES[cell]
    theirs = theirs_cls(3, 4).to(device)
    ours = ours_cls(3, 4).to(device)
    ours.load_state_dict(theirs.state_dict())
    results = []
    for module in (ours, theirs):
        x = torch.randn(0, 3, device=device, requires_grad=True)
        out = module(x)
        outs = list(out) if cell == "lstm" else [out]
        loss = sum(o.sum() for o in outs)
        results.append((outs, torch.autograd.grad(loss, [x, *module.parameters()])))
    (outs, grads), (e_outs, e_grads) = results
    assert [o.shape for o in outs] == [o.shape for o in e_outs] == [(0, 4)] * _count(cell)
    for k, (g, e) in enumerate(zip(grads, e_grads)):
        assert_close(g, e, name=f"gradient {k} (input, parameters)")


@pytest.mark.parametrize("cell", CELLS)
def test_autocast_casts_like_torch(device, cell):
    ours, theirs = _module_pair(cell, 3, 4)
    ours, theirs = ours.to(device), theirs.to(device)
    x = torch.randn(3, 2, 3, device=device)
    ours_cell, theirs_cell = (c(3, 4).to(device) for c in CELL_MODULES[cell])
    ours_cell.load_state_dict(theirs_cell.state_dict())
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out, finals = ours(x)
        e_out, e_finals = theirs(x)
        cell_out, e_cell_out = ours_cell(x[0]), theirs_cell(x[0])
    finals, e_finals = _finals(cell, finals), _finals(cell, e_finals)
    cell_out = list(cell_out) if cell == "lstm" else [cell_out]
    e_cell_out = list(e_cell_out) if cell == "lstm" else [e_cell_out]
    assert out.dtype == torch.bfloat16
    assert [f.dtype for f in finals] == [torch.bfloat16] * _count(cell)
    assert [c.dtype for c in cell_out] == [torch.bfloat16] * _count(cell)
    if device.type == "cuda":
        # torch.lstm_cell and gru_cell are on CUDA autocast's lower-precision list. (On the CPU
        # torch's cells are decomposed ops whose result promotes to fp32: not compared.)
        assert [c.dtype for c in e_cell_out] == [c.dtype for c in cell_out]
    if device.type == "cuda" or cell == "lstm":
        # torch casts its fused LSTM (mkldnn on the CPU, cuDNN on CUDA) and GRU (cuDNN) to bf16.
        assert e_out.dtype == out.dtype and [f.dtype for f in e_finals] == [f.dtype for f in finals]
        assert_close(out, e_out, name="autocast output")
    else:
        # torch's CPU GRU is not one autocast op: its cell runs matmuls in bf16, then promotes
        # against the fp32 h0 it made, and returns fp32. Ours follows torch's CUDA GRU (bf16).
        assert e_out.dtype == torch.float32
        assert_close(out, e_out.to(torch.bfloat16), name="autocast output vs torch's, rounded")
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())


def test_double_backward_of_the_sequences_is_refused(device):
    for cell in CELLS:
        ours, theirs = _module_pair(cell, 3, 4)
        ours, theirs = ours.to(device), theirs.to(device)
        x = torch.randn(3, 2, 3, device=device, requires_grad=True)
        out, _ = ours(x)
        with pytest.raises(RuntimeError, match=f"{cell}: double backward is not supported"):
            torch.autograd.grad(out.sum(), x, create_graph=True)
        (dx,) = torch.autograd.grad(ours(x)[0].sum(), x)
        (e_dx,) = torch.autograd.grad(theirs(x)[0].sum(), x)
        assert_close(dx, e_dx)


@pytest.mark.parametrize("cell", CELLS)
def test_double_backward_of_the_cell_is_refused(device, cell):
    ours_cls, theirs_cls = CELL_MODULES[cell]
    module = ours_cls(3, 4).to(device)
    x = torch.randn(2, 3, device=device, requires_grad=True)
    h = module(x)[0] if cell == "lstm" else module(x)
    with pytest.raises(RuntimeError, match=f"{cell}(_cell)?: double backward is not supported"):
        torch.autograd.grad(h.sum(), module.weight_hh, create_graph=True)
    theirs = theirs_cls(3, 4).to(device)
    theirs.load_state_dict(module.state_dict())
    h = module(x)[0] if cell == "lstm" else module(x)
    e_h = theirs(x)[0] if cell == "lstm" else theirs(x)
    (dx,) = torch.autograd.grad(h.sum(), x)
    (e_dx,) = torch.autograd.grad(e_h.sum(), x)
    assert_close(dx, e_dx)
