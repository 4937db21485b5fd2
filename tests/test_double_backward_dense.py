"""Double backward of the dense ops (linear, relu, gelu, dropout): gradgradcheck in float64, and the
WGAN-GP pattern (a penalty on the input gradient) against torch's own ops.

Under ``create_graph=True`` each backward computes its gradients from differentiable pieces (our
Functions and torch elementwise ops), so the gradient is itself differentiable; without it, the
fast kernel path runs, and a test here proves it still does.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close, assert_gradgradcheck, assert_gradient_penalty_matches, seeded
from tritonprop.kernels import dropout as dropout_kernels
from tritonprop.kernels import elementwise as elementwise_kernels
from tritonprop.kernels import linear as linear_kernels
from tritonprop.ops.activations import gelu, relu
from tritonprop.ops.dropout import dropout
from tritonprop.ops.linear import linear
from tritonprop.ops.reference import dropout as reference_dropout

ACTIVATIONS = [None, "relu", "gelu", "gelu_tanh"]
TORCH_ACTIVATIONS = {
    None: lambda z: z,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
}


def linear_inputs(device, shape=(3, 4), out_features=2, bias=True):
    """x, weight, bias in float64 with every pre-activation at least 0.1 from ReLU's kink, so that
    finite differences (eps 1e-6) never straddle it: draws are repeated until one is."""
    while True:
        x = torch.randn(shape, device=device, dtype=torch.float64)
        w = torch.randn(out_features, shape[-1], device=device, dtype=torch.float64)
        b = torch.randn(out_features, device=device, dtype=torch.float64) if bias else None
        if F.linear(x, w, b).abs().min() > 0.1:
            return x.requires_grad_(), w.requires_grad_(), None if b is None else b.requires_grad_()


def away_from_zero(shape, device):
    x = torch.randn(shape, device=device, dtype=torch.float64)
    return (x.sign() * (x.abs() + 0.1)).requires_grad_()


# ------------------------------------------------------------------------------------------------
# linear
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_gradgradcheck(device, activation, bias):
    x, w, b = linear_inputs(device, (2, 3), 2, bias=bias)
    assert_gradgradcheck(linear, x, w, b, activation=activation, fast_mode=True)


def test_linear_gradgradcheck_full_jacobian_leading_dims(device):
    x, w, b = linear_inputs(device, (2, 1, 3), 2)
    assert_gradgradcheck(linear, x, w, b, activation="gelu")


@pytest.mark.parametrize("trainable", ["input", "weight", "bias"])
def test_linear_gradgradcheck_one_differentiable_input(device, trainable):
    x, w, b = (t.detach() for t in linear_inputs(device, (2, 3), 2))
    {"input": x, "weight": w, "bias": b}[trainable].requires_grad_()
    assert_gradgradcheck(linear, x, w, b, activation="gelu_tanh", fast_mode=True)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_gradient_penalty_matches_torch(device, activation):
    inputs = [t.float() for t in linear_inputs(device, (2, 3, 5), 4)]
    assert_gradient_penalty_matches(lambda x, w, b: linear(x, w, b, activation=activation),
                                    lambda x, w, b: TORCH_ACTIVATIONS[activation](F.linear(x, w, b)), *inputs)


@pytest.mark.parametrize("shape,out_features", [((0, 5), 4), ((3, 0), 4), ((3, 5), 0)],
                         ids=["no_rows", "no_in_features", "no_out_features"])
def test_linear_gradient_penalty_on_empty_shapes_matches_torch(device, shape, out_features):
    inputs = [torch.randn(shape, device=device, requires_grad=True),
              torch.randn(out_features, shape[-1], device=device, requires_grad=True),
              torch.randn(out_features, device=device, requires_grad=True)]
    # Squared, so that the penalty reaches the bias too (through dy = 2y).
    assert_gradient_penalty_matches(lambda x, w, b: linear(x, w, b, activation="gelu") ** 2,
                                    lambda x, w, b: F.gelu(F.linear(x, w, b)) ** 2, *inputs)


def test_linear_third_order_gradient_matches_torch(device):
    # Every order runs on the linear op again: differentiate the penalty's gradient once more.
    x, w, b = (t.detach() for t in linear_inputs(device, (3, 4), 2))

    def third(fn):
        xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
        g, = torch.autograd.grad(fn(xl, wl).sum(), xl, create_graph=True)
        gw, = torch.autograd.grad((g ** 2).sum(), wl, create_graph=True)
        return torch.autograd.grad((gw ** 3).sum(), (xl, wl), allow_unused=True)

    ours = third(lambda xl, wl: linear(xl, wl, b, activation="gelu"))
    theirs = third(lambda xl, wl: F.gelu(F.linear(xl, wl, b)))
    for got, expected, name in zip(ours, theirs, ("input", "weight")):
        assert_close(got, expected, name=name)


def test_linear_first_order_backward_keeps_the_fast_kernels(device, monkeypatch):
    # Without create_graph the backward must not recompute the pre-activation: the forward kernel
    # runs once for y, and once more for dx = dz @ W (the linear of dz with W^T, no activation).
    calls = []
    forward = linear_kernels.forward

    def spy(x, weight, bias=None, activation=None):
        calls.append((tuple(x.shape), tuple(weight.shape), bias is not None, activation))
        return forward(x, weight, bias, activation)

    monkeypatch.setattr(linear_kernels, "forward", spy)
    x, w, b = linear_inputs(device)
    linear(x, w, b, activation="gelu").sum().backward()
    rows = x.numel() // x.shape[-1]
    assert calls == [((rows, w.shape[1]), tuple(w.shape), True, "gelu"),
                     ((rows, w.shape[0]), (w.shape[1], w.shape[0]), False, None)]
    assert x.grad is not None and w.grad is not None and b.grad is not None


# ------------------------------------------------------------------------------------------------
# relu and gelu
# ------------------------------------------------------------------------------------------------

ELEMENTWISE = {
    "relu": (relu, F.relu, {}),
    "gelu": (gelu, F.gelu, {}),
    "gelu_tanh": (gelu, F.gelu, {"approximate": "tanh"}),
}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_gradgradcheck(device, name):
    ours, _, kwargs = ELEMENTWISE[name]
    assert_gradgradcheck(ours, away_from_zero((3, 4), device), **kwargs)


def test_relu_in_place_gradgradcheck(device):
    # torch allows an in-place ReLU on a non-leaf inside a double backward; so do we.
    assert_gradgradcheck(lambda x: relu(x * 1.0, inplace=True), away_from_zero((3, 4), device))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_gradient_penalty_matches_torch(device, name):
    ours, theirs, kwargs = ELEMENTWISE[name]
    x = away_from_zero((3, 5), device).float()
    w = torch.randn(5, device=device, requires_grad=True)
    # x * w gives the penalty a parameter to reach, as a layer before the activation would.
    assert_gradient_penalty_matches(lambda x, w: ours(x * w, **kwargs), lambda x, w: theirs(x * w, **kwargs), x, w)


def test_relu_alone_gradient_penalty_is_zero_like_torch(device):
    # relu's gradient (the mask) requires grad in torch, with a zero derivative: no error, zeros.
    assert_gradient_penalty_matches(relu, F.relu, away_from_zero((7,), device).float())
    assert_gradient_penalty_matches(lambda x: relu(x * 1.0, inplace=True), lambda x: F.relu(x * 1.0, inplace=True),
                                    away_from_zero((7,), device).float())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_relu_gradient_with_a_graph_keeps_torchs_select(device):
    # As the kernel path: 0 where x <= 0 even for an infinite dy, dy where x is nan.
    x = torch.tensor([0.0, -1.0, float("nan"), 2.0], device=device, requires_grad=True)
    dy = torch.tensor([float("inf"), float("inf"), 7.0, 3.0], device=device, requires_grad=True)
    ours, = torch.autograd.grad(relu(x), x, dy, create_graph=True)
    theirs, = torch.autograd.grad(F.relu(x), x, dy, create_graph=True)
    assert ours.requires_grad
    assert torch.equal(ours, theirs) and ours.tolist() == [0.0, 0.0, 7.0, 3.0]


def test_activation_first_order_backward_keeps_the_fast_kernel(device, monkeypatch):
    calls = []
    backward = elementwise_kernels.backward

    def spy(*args, **kwargs):
        calls.append(1)
        return backward(*args, **kwargs)

    monkeypatch.setattr(elementwise_kernels, "backward", spy)
    x = away_from_zero((3, 4), device)
    gelu(x).sum().backward()
    assert calls == [1]
    calls.clear()
    g, = torch.autograd.grad(gelu(x).sum(), x, create_graph=True)
    assert calls == [] and g.requires_grad


# ------------------------------------------------------------------------------------------------
# dropout
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.3, 0.6])
def test_dropout_gradgradcheck(device, p):
    assert_gradgradcheck(seeded(dropout), away_from_zero((3, 5), device), p)


def test_dropout_in_place_gradgradcheck(device):
    assert_gradgradcheck(seeded(lambda x, p: dropout(x * 1.0, p, inplace=True)), away_from_zero((3, 5), device), 0.4)


def test_dropout_gradient_penalty_matches_the_reference_mask(device):
    # torch's masks differ from ours, so the oracle is the reference, which rebuilds our mask from
    # the same seed in plain torch autograd. Squaring makes dy depend on x, so the penalty's
    # gradient runs through the double backward.
    x = away_from_zero((4, 9), device).float()
    assert_gradient_penalty_matches(lambda x: seeded(dropout)(x, 0.5) ** 2,
                                    lambda x: seeded(reference_dropout.dropout)(x, 0.5) ** 2, x)


def test_dropout_double_backward_applies_the_forward_mask_to_any_order(device):
    x = away_from_zero((4, 9), device).float()
    y = seeded(dropout)(x, 0.5)
    kept = y != 0
    dy = torch.randn_like(y).requires_grad_()
    g, = torch.autograd.grad(y, x, dy, create_graph=True)
    v = torch.randn_like(g).requires_grad_()
    gg, = torch.autograd.grad(g, dy, v, create_graph=True)
    ggg, = torch.autograd.grad(gg, v, torch.ones_like(gg))
    for order, value, upstream in ((1, g, dy), (2, gg, v), (3, ggg, torch.ones_like(gg))):
        expected = torch.where(kept, upstream.detach() * torch.tensor(2.0), 0.0)
        assert torch.equal(value.detach(), expected), f"order {order}"
    assert kept.any() and not kept.all()


def test_dropout_first_order_backward_keeps_the_kernel(device, monkeypatch):
    # Dropout's backward is its forward kernel applied to dy with the same seed.
    calls = []
    forward = dropout_kernels.forward

    def spy(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(dropout_kernels, "forward", spy)
    x = away_from_zero((3, 4), device).float().requires_grad_()
    y = dropout(x, 0.5)
    assert calls == [1]
    y.sum().backward()
    assert calls == [1, 1]
