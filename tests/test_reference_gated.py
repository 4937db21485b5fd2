"""The LSTM and GRU references: the Python-loop autograd versions against torch's own modules,
and the numpy versions' hand-derived BPTT against autograd, in float64."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import assert_close
from tritonprop.ops.reference import gru, gru_numpy, lstm, lstm_numpy

T, B, I, H = 5, 3, 4, 6


def _weights(module, suffix="_l0"):
    return [getattr(module, f"{name}{suffix}").detach().clone().requires_grad_()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _inputs(*shapes):
    torch.manual_seed(0)
    return [torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in shapes]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_lstm_layer_matches_torch(reverse):
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, bidirectional=reverse).double()
    x, h0, c0 = _inputs((T, B, I), (1 + reverse, B, H), (1 + reverse, B, H))
    out, (h_n, c_n) = module(x, (h0, c0))
    # The reverse direction is the second half of a bidirectional layer's output.
    d = int(reverse)
    weights = _weights(module, "_l0_reverse" if reverse else "_l0")
    ours, (our_h, our_c) = lstm.lstm_layer(x, h0[d], c0[d], *weights, reverse=reverse)
    assert_close(ours, out[..., d * H:(d + 1) * H])
    assert_close(our_h, h_n[d])
    assert_close(our_c, c_n[d])
    upstream = torch.randn_like(ours)
    theirs = torch.autograd.grad((out[..., d * H:(d + 1) * H] * upstream).sum() + c_n[d].sum(), (x, h0, c0))
    mine = torch.autograd.grad((ours * upstream).sum() + our_c.sum(), (x, h0, c0))
    for a, b in zip(mine, theirs):
        assert_close(a, b)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gru_layer_matches_torch(reverse):
    torch.manual_seed(0)
    module = torch.nn.GRU(I, H, bidirectional=reverse).double()
    x, h0 = _inputs((T, B, I), (1 + reverse, B, H))
    out, h_n = module(x, h0)
    d = int(reverse)
    weights = _weights(module, "_l0_reverse" if reverse else "_l0")
    ours, our_h = gru.gru_layer(x, h0[d], *weights, reverse=reverse)
    assert_close(ours, out[..., d * H:(d + 1) * H])
    assert_close(our_h, h_n[d])
    upstream = torch.randn_like(ours)
    theirs = torch.autograd.grad((out[..., d * H:(d + 1) * H] * upstream).sum(), (x, h0))
    mine = torch.autograd.grad((ours * upstream).sum(), (x, h0))
    for a, b in zip(mine, theirs):
        assert_close(a, b)


def test_cells_match_torch_cells_without_bias():
    torch.manual_seed(0)
    lstm_cell = torch.nn.LSTMCell(I, H, bias=False).double()
    gru_cell = torch.nn.GRUCell(I, H, bias=False).double()
    x, h, c = _inputs((B, I), (B, H), (B, H))
    h_new, c_new = lstm.lstm_cell(x, (h, c), lstm_cell.weight_ih, lstm_cell.weight_hh)
    expected_h, expected_c = lstm_cell(x, (h, c))
    assert_close(h_new, expected_h)
    assert_close(c_new, expected_c)
    assert_close(gru.gru_cell(x, h, gru_cell.weight_ih, gru_cell.weight_hh), gru_cell(x, h))


def _numpy(t):
    return t.detach().numpy()


def test_lstm_numpy_backward_matches_autograd():
    torch.manual_seed(1)
    module = torch.nn.LSTM(I, H).double()
    x, h0, c0 = _inputs((T, B, I), (B, H), (B, H))
    weights = _weights(module)
    out, (h_n, c_n) = lstm.lstm_layer(x, h0, c0, *weights)
    dy, dh_n, dc_n = torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n)
    expected = torch.autograd.grad((out * dy).sum() + (h_n * dh_n).sum() + (c_n * dc_n).sum(), (x, h0, c0, *weights))

    y, h, c, cache = lstm_numpy.lstm_forward(*(_numpy(t) for t in (x, h0, c0, *weights)))
    np.testing.assert_allclose(y, _numpy(out), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c, _numpy(c_n), rtol=1e-12, atol=1e-12)
    grads = lstm_numpy.lstm_backward(_numpy(dy), _numpy(dh_n), _numpy(dc_n), cache)
    for name, ours, theirs in zip(("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh"), grads, expected):
        np.testing.assert_allclose(ours, _numpy(theirs), rtol=1e-10, atol=1e-12, err_msg=name)


def test_gru_numpy_backward_matches_autograd():
    torch.manual_seed(2)
    module = torch.nn.GRU(I, H).double()
    x, h0 = _inputs((T, B, I), (B, H))
    weights = _weights(module)
    out, h_n = gru.gru_layer(x, h0, *weights)
    dy, dh_n = torch.randn_like(out), torch.randn_like(h_n)
    expected = torch.autograd.grad((out * dy).sum() + (h_n * dh_n).sum(), (x, h0, *weights))

    y, h, cache = gru_numpy.gru_forward(*(_numpy(t) for t in (x, h0, *weights)))
    np.testing.assert_allclose(y, _numpy(out), rtol=1e-12, atol=1e-12)
    grads = gru_numpy.gru_backward(_numpy(dy), _numpy(dh_n), cache)
    for name, ours, theirs in zip(("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"), grads, expected):
        np.testing.assert_allclose(ours, _numpy(theirs), rtol=1e-10, atol=1e-12, err_msg=name)
