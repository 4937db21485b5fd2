"""RNN: gradcheck of the cell and the sequence, parity with torch.nn.RNN for every constructor option,
packed sequences, the split recurrence, a long sequence, clipping, dropout, errors."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from helpers import RecurrentCase, assert_close, assert_gradcheck, assert_matches
from tritonprop import backend
from tritonprop.kernels import recurrence
from tritonprop.kernels import rnn as K
from tritonprop.ops.reference import rnn as reference
from tritonprop.ops.reference import rnn_numpy
from tritonprop.ops.rnn import RNN, RNNCell, rnn, rnn_cell


# fp32 parity is checked in full precision (tests/conftest.py: strict_float32).
pytestmark = pytest.mark.usefixtures("strict_float32")


SEQS = [
    RecurrentCase("tanh"),
    RecurrentCase("relu", options=dict(nonlinearity="relu")),
    RecurrentCase("no_bias", T=4, B=1, I=2, H=5, options=dict(bias=False)),
    RecurrentCase("bidirectional", T=2, B=1, I=2, H=2, options=dict(bidirectional=True)),
    RecurrentCase("all_combined", T=2, B=1, I=2, H=2,
        options=dict(num_layers=2, nonlinearity="relu", batch_first=True, bidirectional=True)),
]
IDS = [s.name for s in SEQS]


def _sequence_fn(**options):
    """rnn(...) as a function of tensors only, returning output and h_n as one tensor for gradcheck."""
    def fn(x, hx, *weights):
        out, h_n = rnn(x, hx, list(weights), **options)
        return torch.cat([out.reshape(-1), h_n.reshape(-1)])
    return fn


def _reference_fn(**options):
    def fn(x, hx, *weights):
        out, h_n = reference.rnn(x, hx, list(weights), **options)
        return torch.cat([out.reshape(-1), h_n.reshape(-1)])
    return fn


def _torch_fn(**options):
    def fn(x, hx, *weights):
        tanh = options.get("nonlinearity", "tanh") == "tanh"
        out, h_n = (torch._VF.rnn_tanh if tanh else torch._VF.rnn_relu)(
            x, hx, list(weights), options.get("bias", True), options.get("num_layers", 1), 0.0, True,
            options.get("bidirectional", False), options.get("batch_first", False))
        return torch.cat([out.reshape(-1), h_n.reshape(-1)])
    return fn


def _cell_tensors(device, B=2, I=3, H=4, bias=True, dtype=torch.float32):
    x = torch.randn(B, I, device=device).to(dtype).requires_grad_()
    h = (torch.randn(B, H, device=device) * 0.5).to(dtype).requires_grad_()
    w_ih = (torch.randn(H, I, device=device) * 0.5).to(dtype).requires_grad_()
    w_hh = (torch.randn(H, H, device=device) * 0.5).to(dtype).requires_grad_()
    b_ih = torch.randn(H, device=device).to(dtype).requires_grad_() if bias else None
    b_hh = torch.randn(H, device=device).to(dtype).requires_grad_() if bias else None
    return x, h, w_ih, w_hh, b_ih, b_hh


# ------------------------------------------------------------------------------------------------
# gradcheck (float64): the cell, the sequence over the constructor grid, the split recurrence
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity,bias", [("tanh", True), ("relu", False)])
def test_gradcheck_cell(device, nonlinearity, bias):
    args = _cell_tensors(device, bias=bias)
    assert_gradcheck(rnn_cell, *args, nonlinearity=nonlinearity, fast_mode=True)


def test_gradcheck_cell_full_jacobian_unbatched(device):
    x, h, w_ih, w_hh, b_ih, b_hh = _cell_tensors(device, B=1, I=1, H=2)
    assert_gradcheck(rnn_cell, x[0], h[0], w_ih, w_hh, b_ih, b_hh)


@pytest.mark.parametrize("seq", SEQS[:4], ids=IDS[:4])
def test_gradcheck_sequence_x_h0_and_every_weight(device, seq):
    x, (hx,), weights = seq.tensors(torch.nn.RNN, device)
    assert_gradcheck(_sequence_fn(**seq.kwargs), x, hx, *weights, fast_mode=True)


def test_gradcheck_sequence_full_jacobian_small(device):
    seq = RecurrentCase("tiny", T=2, B=1, I=1, H=2)
    x, (hx,), weights = seq.tensors(torch.nn.RNN, device)
    assert_gradcheck(_sequence_fn(**seq.kwargs), x, hx, *weights)


@pytest.mark.slow
@pytest.mark.parametrize("seq", SEQS, ids=IDS)
def test_gradcheck_sequence_full_jacobian_grid(device, seq):
    # The whole grid, all_combined (two bidirectional layers, batch-first, relu) included.
    x, (hx,), weights = seq.tensors(torch.nn.RNN, device)
    assert_gradcheck(_sequence_fn(**seq.kwargs), x, hx, *weights)


def test_gradcheck_split_recurrence(device, split):
    seq = RecurrentCase("split", T=2, B=1, I=2, H=17)
    x, (hx,), weights = seq.tensors(torch.nn.RNN, device)
    assert_gradcheck(_sequence_fn(**seq.kwargs), x, hx, *weights, fast_mode=True)


# ------------------------------------------------------------------------------------------------
# Parity with torch (through state_dict) and the references
# ------------------------------------------------------------------------------------------------


def _run_module(module, x, hx):
    x = x.detach().clone().requires_grad_()
    hx = hx.detach().clone().requires_grad_()
    out, h_n = module(x, hx)
    gen = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=gen).to(out)).sum() + (h_n * torch.randn(h_n.shape, generator=gen).to(h_n)).sum()
    grads = torch.autograd.grad(loss, [x, hx, *module.parameters()])
    return out, h_n, grads


OPTION_GRID = [
    dict(),
    dict(num_layers=3),
    dict(nonlinearity="relu"),
    dict(bias=False),
    dict(batch_first=True),
    dict(dropout=0.5, num_layers=2),  # compared in eval mode, where dropout does nothing
    dict(bidirectional=True),
    dict(num_layers=2, nonlinearity="relu", bias=False, batch_first=True, dropout=0.3, bidirectional=True),
]


@pytest.mark.parametrize("options", OPTION_GRID, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_module_matches_torch_through_state_dict(device, options):
    theirs = torch.nn.RNN(3, 5, **options).to(device)
    ours = RNN(3, 5, **options).to(device)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    if options.get("dropout"):
        ours.eval()
        theirs.eval()
    seq = RecurrentCase("module", T=4, B=3, I=3, H=5, options=options)
    x, (hx,), _ = seq.tensors(torch.nn.RNN, device)
    out, h_n, grads = _run_module(ours, x, hx)
    e_out, e_h_n, e_grads = _run_module(theirs, x, hx)
    assert_close(out, e_out, name="output")
    assert out.stride() == e_out.stride(), "output layout differs from torch's"
    assert_close(h_n, e_h_n, name="h_n")
    for k, (g, e) in enumerate(zip(grads, e_grads)):
        assert_close(g, e, name=f"gradient {k} (x, hx, then parameters)")


@pytest.mark.parametrize("seq", [SEQS[0], SEQS[3], SEQS[4]], ids=lambda s: s.name)
def test_functional_matches_reference_and_torch_fp32(device, seq):
    x, (hx,), weights = seq.tensors(torch.nn.RNN, device)
    oracles = {"reference": _reference_fn(**seq.kwargs), "torch": _torch_fn(**seq.kwargs)}
    assert_matches(_sequence_fn(**seq.kwargs), oracles, x, hx, *weights)


def _mixed_precision_layer(x, h0, w_ih, w_hh, b_ih, b_hh, dy, dh_n):
    """The kernels' precision contract for a 16-bit tanh layer, written out in fp32 torch: state,
    products and sums in fp32; rounded to the input dtype where the kernels store a tensor (the
    input projection, each output h_t, each dz_t, and the results)."""
    dtype = x.dtype
    f = [t.float() for t in (x, h0, w_ih, w_hh, b_ih, b_hh, dy, dh_n)]
    x, h0, w_ih, w_hh, b_ih, b_hh, dy, dh_n = f
    xproj = (x @ w_ih.t() + (b_ih + b_hh)).to(dtype).float()
    h, outputs = h0, []
    for t in range(x.shape[0]):
        h = torch.tanh(xproj[t] + h.to(dtype).float() @ w_hh.t())
        outputs.append(h.to(dtype).float())
    y = torch.stack(outputs)
    g, dz = dh_n, [None] * x.shape[0]
    for t in reversed(range(x.shape[0])):
        dz[t] = ((dy[t] + g) * (1 - y[t] * y[t])).to(dtype).float()
        g = dz[t] @ w_hh
    dz = torch.stack(dz)
    h_prev = torch.cat([h0.to(dtype).float()[None], y[:-1]])
    grads = (dz @ w_ih, g, torch.einsum("tbh,tbi->hi", dz, x), torch.einsum("tbh,tbk->hk", dz, h_prev),
             dz.sum((0, 1)), dz.sum((0, 1)))
    return y.to(dtype), h.to(dtype), [t.to(dtype) for t in grads]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_follows_the_mixed_precision_contract(device, dtype):
    # Against an fp32 oracle, 16-bit RNN gradients differ by a few ulps that compound over steps
    # (torch's own fp16/bf16 RNN does the same); the oracle here rounds where the kernels round.
    # Halved inputs keep tanh away from saturation, where act' = 1 - h^2 turns a one-ulp
    # difference in h (two fp32 tanh implementations) into a large relative one.
    seq = RecurrentCase("low", T=4, B=2, I=3, H=5)
    x, (hx,), weights = [t.detach() * 0.5 if isinstance(t, torch.Tensor) else [w.detach() * 0.5 for w in t]
                      for t in seq.tensors(torch.nn.RNN, device, dtype)]
    dy = torch.randn(4, 2, 5, device=device).to(dtype)
    dh_n = torch.randn(1, 2, 5, device=device).to(dtype)
    leaves = [t.detach().requires_grad_() for t in (x, hx, *weights)]
    out, h_n = rnn(leaves[0], leaves[1], leaves[2:])
    grads = torch.autograd.grad([out, h_n], leaves, [dy, dh_n])
    e_out, e_h_n, e_grads = _mixed_precision_layer(x, hx[0], *weights, dy, dh_n[0])
    assert out.dtype == dtype
    assert_close(out, e_out, name="output")
    assert_close(h_n[0], e_h_n, name="h_n")
    assert_close(out, reference.rnn(x, hx, weights)[0], name="output vs the fp32 reference")
    names = ["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"]
    for name, g, e in zip(names, grads, e_grads):
        assert_close(g.reshape(e.shape), e, name=f"gradient of {name}")


def test_split_recurrence_matches_torch_with_packed_input(device, split):
    # H = 20 over 16-wide tiles, B = 17 over two programs of 16 rows, ragged lengths, both directions.
    theirs = torch.nn.RNN(2, 20, bidirectional=True).to(device)
    ours = RNN(2, 20, bidirectional=True).to(device)
    ours.load_state_dict(theirs.state_dict())
    lengths = [3, 1, 3, 2, 2, 3, 1, 2, 3, 1, 3, 1, 2, 3, 2, 3, 2]
    seqs = [torch.randn(n, 2, device=device) for n in lengths]
    packed = pack_sequence(seqs, enforce_sorted=False)
    hx = torch.randn(2, 17, 20, device=device)
    (out, h_n), (e_out, e_h_n) = ours(packed, hx), theirs(packed, hx)
    assert_close(out.data, e_out.data, name="packed output")
    assert_close(h_n, e_h_n, name="h_n")
    grads = torch.autograd.grad(out.data.sum() + h_n.sum(), list(ours.parameters()))
    e_grads = torch.autograd.grad(e_out.data.sum() + e_h_n.sum(), list(theirs.parameters()))
    for g, e in zip(grads, e_grads):
        assert_close(g, e, name="parameter gradient")


def test_cell_matches_torch_and_reference(device):
    args = _cell_tensors(device, B=3, I=5, H=6)
    for nonlinearity, theirs in (("tanh", torch.rnn_tanh_cell), ("relu", torch.rnn_relu_cell)):
        oracles = {"torch": theirs, "reference": lambda *a: reference.rnn_cell(*a, nonlinearity=nonlinearity)}
        assert_matches(lambda *a: rnn_cell(*a, nonlinearity=nonlinearity), oracles, *args)


def test_cell_module_loads_state_dict_and_matches(device):
    theirs = torch.nn.RNNCell(3, 4, nonlinearity="relu").to(device)
    ours = RNNCell(3, 4, nonlinearity="relu").to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, device=device)
    assert_close(ours(x), theirs(x), name="batched, hx=None")
    assert_close(ours(x[0], torch.ones(4, device=device)), theirs(x[0], torch.ones(4, device=device)),
                 name="unbatched")


def test_numpy_reference_matches_autograd():
    T, B, I, H = 4, 2, 3, 5
    rng = np.random.default_rng(0)
    x, h0 = rng.standard_normal((T, B, I)), rng.standard_normal((B, H))
    w_ih, w_hh = rng.standard_normal((H, I)) * 0.5, rng.standard_normal((H, H)) * 0.5
    b_ih, b_hh = rng.standard_normal(H), rng.standard_normal(H)
    dy, dh_n = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    for nonlinearity in ("tanh", "relu"):
        y, h_n, cache = rnn_numpy.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        grads = rnn_numpy.rnn_backward(dy, dh_n, cache)
        tensors = [torch.tensor(a, requires_grad=True) for a in (x, h0, w_ih, w_hh, b_ih, b_hh)]
        e_y, e_h_n = reference.rnn_layer(*tensors, nonlinearity)
        e_grads = torch.autograd.grad([e_y, e_h_n], tensors, [torch.tensor(dy), torch.tensor(dh_n)])
        assert_close(torch.tensor(y), e_y, name="numpy forward")
        assert_close(torch.tensor(h_n), e_h_n, name="numpy h_n")
        for k, (g, e) in enumerate(zip(grads, e_grads)):
            assert_close(torch.tensor(g), e, name=f"numpy gradient {k}")


# ------------------------------------------------------------------------------------------------
# Packed sequences (the name classifier's path), long sequences, clipping, dropout
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [dict(batch_first=True), dict(num_layers=2, bidirectional=True)],
                         ids=["batch_first", "two_layers_bidirectional"])
def test_packed_sequence_matches_torch(device, options):
    theirs = torch.nn.RNN(4, 5, **options).to(device)
    ours = RNN(4, 5, **options).to(device)
    ours.load_state_dict(theirs.state_dict())
    D = 2 if options.get("bidirectional") else 1
    layers = options.get("num_layers", 1)
    seqs = [torch.randn(n, 4, device=device) for n in (3, 5, 1, 3)]  # unsorted, with a tie
    results = []
    for module in (ours, theirs):
        xs = [s.clone().requires_grad_() for s in seqs]
        hx = torch.linspace(-1, 1, layers * D * 4 * 5, device=device).reshape(layers * D, 4, 5).requires_grad_()
        out, h_n = module(pack_sequence(xs, enforce_sorted=False), hx)
        padded, lengths = pad_packed_sequence(out, batch_first=True)
        loss = (padded * torch.arange(padded.numel(), device=device).reshape(padded.shape).sin()).sum() + h_n.pow(2).sum()
        grads = torch.autograd.grad(loss, [*xs, hx, *module.parameters()])
        results.append((out, h_n, grads))
    (out, h_n, grads), (e_out, e_h_n, e_grads) = results
    assert torch.equal(out.batch_sizes, e_out.batch_sizes)
    assert torch.equal(out.sorted_indices, e_out.sorted_indices)
    assert torch.equal(out.unsorted_indices, e_out.unsorted_indices)
    assert_close(out.data, e_out.data, name="packed output")
    assert_close(h_n, e_h_n, name="h_n (original batch order)")
    for k, (g, e) in enumerate(zip(grads, e_grads)):
        assert_close(g, e, name=f"gradient {k} (sequences, hx, parameters)")


def test_long_sequence_stays_finite_and_matches_reference(device):
    seq = RecurrentCase("long", T=100, B=1, I=2, H=3)
    x, (hx,), weights = seq.tensors(torch.nn.RNN, device)
    out = assert_matches(_sequence_fn(), {"reference": _reference_fn()}, x, hx, *weights)
    assert torch.isfinite(out).all()


def test_gradient_clipping_on_module_parameters(device):
    theirs = torch.nn.RNN(3, 4, num_layers=2).to(device)
    ours = RNN(3, 4, num_layers=2).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 2, 3, device=device) * 3
    norms = []
    for module in (ours, theirs):
        out, h_n = module(x)
        (out.pow(2).sum() * 10 + h_n.sum()).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm=0.5))
    assert norms[0] > 0.5, "the test needs gradients larger than the clip"
    assert_close(norms[0], norms[1], name="total norm before clipping")
    clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ours.parameters()]))
    assert clipped <= 0.5 + 1e-5
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert_close(p.grad, q.grad, name="clipped gradient")


def test_dropout_between_layers(device):
    module = RNN(3, 4, num_layers=2, dropout=0.5).to(device)
    x = torch.randn(4, 2, 3, device=device)
    torch.manual_seed(3)
    out, _ = module(x)
    torch.manual_seed(3)
    again, _ = module(x)
    assert torch.equal(out, again), "dropout must be reproducible under torch.manual_seed"
    weights = [w.detach() for w in module._flat_weights]
    torch.manual_seed(3)
    expected, _ = reference.rnn(x, None, weights, num_layers=2, dropout=0.5, training=True)
    assert_close(out, expected, name="vs the reference with the kernel's own mask")
    plain, _ = rnn(x, None, weights, num_layers=2)
    assert not torch.allclose(out, plain), "dropout changed nothing"
    module.eval()
    assert torch.equal(module(x)[0], plain), "eval mode must ignore dropout"


# ------------------------------------------------------------------------------------------------
# Shapes and modes: unbatched, empty batch, non-contiguous input, autocast, reference backend
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input(device, batch_first):
    theirs = torch.nn.RNN(3, 4, batch_first=batch_first, bidirectional=True).to(device)
    ours = RNN(3, 4, batch_first=batch_first, bidirectional=True).to(device)
    ours.load_state_dict(theirs.state_dict())
    x, hx = torch.randn(5, 3, device=device), torch.randn(2, 4, device=device)
    for got, expected in zip(ours(x, hx), theirs(x, hx)):
        assert_close(got, expected)


def test_empty_batch(device):
    module = RNN(3, 4, num_layers=2, bidirectional=True).to(device)
    x = torch.randn(5, 0, 3, device=device, requires_grad=True)
    out, h_n = module(x)
    assert out.shape == (5, 0, 8) and h_n.shape == (4, 0, 4)
    (out.sum() + h_n.sum()).backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())


def test_non_contiguous_time_major_input(device):
    theirs = torch.nn.RNN(3, 4).to(device)
    ours = RNN(3, 4).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 2, 7, device=device)[:, :, 1:7:2]  # strided features, read without a copy
    for got, expected in zip(ours(x), theirs(x)):
        assert_close(got, expected)


def test_autocast_casts_like_torch(device):
    theirs = torch.nn.RNN(3, 4).to(device)
    ours = RNN(3, 4).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 2, 3, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out, h_n = ours(x)
        e_out, e_h_n = theirs(x)
        cell = rnn_cell(x[0], None, ours.weight_ih_l0, ours.weight_hh_l0)
    assert out.dtype == e_out.dtype == torch.bfloat16 and h_n.dtype == e_h_n.dtype
    assert cell.dtype == torch.bfloat16
    assert_close(out, e_out, name="autocast output")


def test_reference_backend_routes_to_the_loop(device, monkeypatch):
    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("the Triton kernel ran under TRITONPROP_BACKEND=reference")

    monkeypatch.setattr(recurrence, "forward", kernel_must_not_run)
    monkeypatch.setattr(K, "cell_forward", kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    module = RNN(3, 4).to(device)
    x = torch.randn(3, 2, 3, device=device)
    out, _ = module(x)
    assert_close(out, reference.rnn(x, None, module._flat_weights)[0])
    assert rnn_cell(x[0], None, module.weight_ih_l0, module.weight_hh_l0).shape == (2, 4)


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors that name the argument
# ------------------------------------------------------------------------------------------------


def _module():
    return RNN(3, 4, num_layers=2)


BAD_SEQUENCE = [
    ("wrong feature size", lambda: _module()(torch.randn(5, 2, 6)), RuntimeError, r"input\.size\(-1\).*Expected 3, got 6"),
    ("wrong h0 shape", lambda: _module()(torch.randn(5, 2, 3), torch.randn(1, 2, 4)), RuntimeError,
     r"hx.*\(2, 2, 4\), got \[1, 2, 4\]"),
    ("wrong h0 batch", lambda: _module()(torch.randn(5, 2, 3), torch.randn(2, 3, 4)), RuntimeError, r"hx.*\(2, 2, 4\)"),
    ("2-D h0 with batched input", lambda: _module()(torch.randn(5, 2, 3), torch.randn(2, 4)), RuntimeError,
     r"hx should also be 3-D"),
    ("3-D h0 with unbatched input", lambda: _module()(torch.randn(5, 3), torch.randn(2, 1, 4)), RuntimeError,
     r"hx should also be 2-D"),
    ("4-D input", lambda: _module()(torch.randn(1, 5, 2, 3)), ValueError, r"input.*2D or 3D"),
    ("empty sequence", lambda: _module()(torch.randn(0, 2, 3)), RuntimeError, r"sequence length"),
    ("dtype mismatch", lambda: _module()(torch.randn(5, 2, 3, dtype=torch.float64)), ValueError,
     r"input dtype \(torch.float64\) does not match weights\[0\]"),
    ("wrong nonlinearity (module)", lambda: RNN(3, 4, nonlinearity="sigmoid"), ValueError, r"nonlinearity"),
    ("wrong nonlinearity (functional)", lambda: rnn(torch.randn(2, 1, 3), None, _module()._flat_weights[:4],
                                                    nonlinearity="gelu"), ValueError, r"nonlinearity 'gelu'"),
    ("too few weights", lambda: rnn(torch.randn(2, 1, 3), None, _module()._flat_weights[:3]), ValueError,
     r"weights must be a list of 4"),
    ("wrong weight shape", lambda: rnn(torch.randn(2, 1, 3), None, [torch.randn(4, 3), torch.randn(4, 5),
                                                                    torch.randn(4), torch.randn(4)]),
     RuntimeError, r"weights\[1\]"),
    ("integer input", lambda: _module()(torch.ones(5, 2, 3, dtype=torch.long)), ValueError,
     r"input dtype \(torch.int64\) does not match weights\[0\]"),
    ("h0 dtype mismatch", lambda: _module()(torch.randn(5, 2, 3), torch.randn(2, 2, 4, dtype=torch.float64)),
     RuntimeError, r"input dtype \(torch.float32\) does not match hx dtype \(torch.float64\)"),
    ("bad dropout", lambda: rnn(torch.randn(2, 1, 3), None, _module()._flat_weights[:4], dropout=1.5), ValueError,
     r"dropout"),
]

BAD_CELL = [
    ("wrong feature size", lambda: RNNCell(3, 4)(torch.randn(2, 5)), RuntimeError, r"input.*got 5 expected 3"),
    ("wrong hx size", lambda: RNNCell(3, 4)(torch.randn(2, 3), torch.randn(2, 5)), RuntimeError,
     r"hx.*hidden_size: got 5"),
    ("wrong hx batch", lambda: RNNCell(3, 4)(torch.randn(2, 3), torch.randn(3, 4)), RuntimeError,
     r"batch size 2 doesn't match hx"),
    ("3-D input", lambda: RNNCell(3, 4)(torch.randn(1, 2, 3)), ValueError, r"input.*1D or 2D"),
    ("wrong nonlinearity (module)", lambda: RNNCell(3, 4, nonlinearity="tan")(torch.randn(2, 3)), RuntimeError,
     r"nonlinearity 'tan'"),
    ("wrong nonlinearity (functional)", lambda: rnn_cell(torch.randn(2, 3), None, torch.randn(4, 3), torch.randn(4, 4),
                                                         nonlinearity="Tanh"), RuntimeError, r"nonlinearity 'Tanh'"),
    ("hx dtype mismatch", lambda: RNNCell(3, 4)(torch.randn(2, 3), torch.randn(2, 4, dtype=torch.float64)),
     RuntimeError, r"hx dtype \(torch.float64\)"),
    ("integer input", lambda: RNNCell(3, 4)(torch.ones(2, 3, dtype=torch.long)), RuntimeError,
     r"does not match w_ih dtype"),
]


@pytest.mark.parametrize("case,call,error,match", BAD_SEQUENCE + BAD_CELL, ids=[c[0] for c in BAD_SEQUENCE + BAD_CELL])
def test_bad_input_names_the_argument(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("case", ["integer input", "h0 dtype mismatch", "wrong h0 batch", "empty sequence"])
def test_sequence_errors_have_torchs_type(case):
    error = next(c[2] for c in BAD_SEQUENCE if c[0] == case)
    theirs = torch.nn.RNN(3, 4, num_layers=2)
    inputs = {"integer input": (torch.ones(5, 2, 3, dtype=torch.long),),
              "h0 dtype mismatch": (torch.randn(5, 2, 3), torch.randn(2, 2, 4, dtype=torch.float64)),
              "wrong h0 batch": (torch.randn(5, 2, 3), torch.randn(2, 3, 4)),
              "empty sequence": (torch.randn(0, 2, 3),)}[case]
    with pytest.raises(error):
        theirs(*inputs)


@pytest.mark.parametrize("case", ["wrong nonlinearity (module)", "hx dtype mismatch", "integer input"])
def test_cell_errors_have_torchs_type(case):
    error = next(c[2] for c in BAD_CELL if c[0] == case)
    module = torch.nn.RNNCell(3, 4, nonlinearity="tan" if "nonlinearity" in case else "tanh")
    x = torch.ones(2, 3, dtype=torch.long) if case == "integer input" else torch.randn(2, 3)
    hx = torch.randn(2, 4, dtype=torch.float64) if case == "hx dtype mismatch" else None
    with pytest.raises(error):
        module(x, hx)


@pytest.mark.parametrize("present", ["b_ih", "b_hh"])
def test_cell_with_one_bias_matches_torch(device, present):
    x, h = torch.randn(2, 3, device=device), torch.randn(2, 4, device=device)
    w_ih, w_hh, b = torch.randn(4, 3, device=device), torch.randn(4, 4, device=device), torch.randn(4, device=device)
    biases = (b, None) if present == "b_ih" else (None, b)
    assert_matches(lambda *a: rnn_cell(*a, *biases), {"torch": lambda *a: torch.rnn_tanh_cell(*a, *biases)},
                   x, h, w_ih, w_hh)


# ------------------------------------------------------------------------------------------------
# Weights stored as strided or expanded views
# ------------------------------------------------------------------------------------------------


def _restride(module, layout):
    """Replace every weight of `module` by an equal Parameter in another layout."""
    with torch.no_grad():
        for name in module._flat_weights_names if hasattr(module, "_flat_weights_names") else (
                "weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            value = getattr(module, name).detach()
            if layout == "transposed" and value.dim() == 2:
                value = value.t().contiguous().t()
            elif layout == "sliced":
                wide = torch.zeros(*value.shape[:-1], 2 * value.shape[-1], device=value.device)
                wide[..., ::2] = value
                value = wide[..., ::2]
            elif layout == "expanded" and value.dim() == 1:
                value = value[:1].expand(value.shape)
            setattr(module, name, torch.nn.Parameter(value))
        if hasattr(module, "_init_flat_weights"):
            module._init_flat_weights()


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
def test_strided_and_expanded_weights_match_torch(device, layout):
    theirs = torch.nn.RNN(3, 5, num_layers=2, bidirectional=True).to(device)
    ours = RNN(3, 5, num_layers=2, bidirectional=True).to(device)
    ours.load_state_dict(theirs.state_dict())
    _restride(ours, layout)
    _restride(theirs, layout)
    x, h0 = torch.randn(4, 2, 3, device=device), torch.randn(4, 2, 5, device=device)
    grads = []
    for module in (ours, theirs):
        out, h_n = module(x, h0)
        (out.sum() + (h_n * 2).sum()).backward()
        grads.append(([out, h_n], [p.grad for p in module.parameters()]))
    (outs, ps), (e_outs, e_ps) = grads
    for got, expected in zip(outs + ps, e_outs + e_ps):
        assert_close(got, expected)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
def test_cell_strided_and_expanded_weights_match_torch(device, layout):
    theirs = torch.nn.RNNCell(3, 5).to(device)
    ours = RNNCell(3, 5).to(device)
    ours.load_state_dict(theirs.state_dict())
    _restride(ours, layout)
    _restride(theirs, layout)
    x, h = torch.randn(2, 3, device=device), torch.randn(2, 5, device=device)
    results = []
    for module in (ours, theirs):
        out = module(x, h)
        (out * torch.linspace(-1, 1, 5, device=device)).sum().backward()
        results.append([out] + [p.grad for p in module.parameters()])
    for got, expected in zip(*results):
        assert_close(got, expected)


# ------------------------------------------------------------------------------------------------
# Double backward is refused, naming the op
# ------------------------------------------------------------------------------------------------


def test_double_backward_of_the_sequence_is_refused(device):
    module = RNN(3, 4).to(device)
    x = torch.randn(3, 2, 3, device=device, requires_grad=True)
    out, _ = module(x)
    with pytest.raises(RuntimeError, match="rnn: double backward is not supported"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
    theirs = torch.nn.RNN(3, 4).to(device)
    theirs.load_state_dict(module.state_dict())
    (dx,) = torch.autograd.grad(module(x)[0].sum(), x)
    (e_dx,) = torch.autograd.grad(theirs(x)[0].sum(), x)
    assert_close(dx, e_dx)


def test_double_backward_of_the_cell_is_refused(device):
    module = RNNCell(3, 4).to(device)
    x = torch.randn(2, 3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="rnn_cell: double backward is not supported"):
        torch.autograd.grad(module(x).sum(), module.weight_hh, create_graph=True)
    theirs = torch.nn.RNNCell(3, 4).to(device)
    theirs.load_state_dict(module.state_dict())
    (dx,) = torch.autograd.grad(module(x).sum(), x)
    (e_dx,) = torch.autograd.grad(theirs(x).sum(), x)
    assert_close(dx, e_dx)
