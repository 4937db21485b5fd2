"""Double backward of conv2d, batch_norm and layer_norm: gradgradcheck in float64, and a gradient
penalty (the WGAN-GP pattern) compared with the same penalty through torch's own ops."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close, assert_gradgradcheck, assert_gradient_penalty_matches
from tritonprop import ops
from tritonprop.ops import batchnorm as batchnorm_op
from tritonprop.ops import conv as conv_op
from tritonprop.ops import layernorm as layernorm_op


def _leaf(*shape, device="cpu", dtype=torch.float64, scale=1.0, shift=0.0):
    return (torch.randn(*shape, device=device, dtype=dtype) * scale + shift).requires_grad_()


# ------------------------------------------------------------------------------------------------
# conv2d
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_conv2d_gradgradcheck(device, activation, bias):
    x, w = _leaf(1, 2, 4, 3, device=device), _leaf(3, 2, 2, 2, device=device)
    b = _leaf(3, device=device) if bias else None
    assert_gradgradcheck(ops.conv2d, x, w, b, stride=(2, 1), padding=1, activation=activation, fast_mode=True)


@pytest.mark.parametrize("geometry", [
    dict(groups=2, dilation=(1, 2), padding=(1, 0)),
    dict(groups=2, stride=2, padding=1),  # one input channel per group: the depthwise kernels
    dict(padding="same"),
], ids=["groups_dilated", "depthwise_strided", "same"])
def test_conv2d_gradgradcheck_geometry(device, geometry):
    channels_per_group = 2 // geometry.get("groups", 1)
    x, w, b = _leaf(1, 2, 4, 4, device=device), _leaf(2, channels_per_group, 2, 2, device=device), _leaf(2, device=device)
    assert_gradgradcheck(ops.conv2d, x, w, b, fast_mode=True, **geometry)


@pytest.mark.slow
def test_conv2d_gradgradcheck_full_jacobian(device):
    x, w, b = _leaf(1, 2, 3, 3, device=device), _leaf(2, 2, 2, 2, device=device), _leaf(2, device=device)
    assert_gradgradcheck(ops.conv2d, x, w, b, padding=1, activation="gelu")


def test_conv2d_third_order_runs_on_the_kernels(device):
    # The family of Functions differentiates itself: a third derivative matches torch's.
    def third(fn, x, w):
        x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        g, = torch.autograd.grad(fn(x, w).pow(2).sum(), x, create_graph=True)
        gw, = torch.autograd.grad(g.pow(2).sum(), w, create_graph=True)
        gx, = torch.autograd.grad(gw.sum(), x)
        return gx
    x, w = _leaf(1, 2, 4, 4, device=device), _leaf(3, 2, 3, 3, device=device)
    assert_close(third(lambda x, w: ops.conv2d(x, w, padding=1), x, w),
                 third(lambda x, w: F.conv2d(x, w, padding=1), x, w), name="third derivative")


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_conv2d_gradient_penalty_matches_torch(device, activation):
    torch_activation = {None: lambda y: y, "gelu": F.gelu}[activation]
    x, w, b = _leaf(2, 3, 5, 4, device=device), _leaf(4, 3, 3, 3, device=device), _leaf(4, device=device)
    assert_gradient_penalty_matches(
        lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=1, activation=activation),
        lambda x, w, b: torch_activation(F.conv2d(x, w, b, stride=2, padding=1)),
        x, w, b,
    )


def test_conv2d_gradient_penalty_in_float32_matches_torch(device):
    x, w, b = (t.float() for t in (_leaf(2, 3, 5, 5, device=device), _leaf(4, 3, 3, 3, device=device),
                                   _leaf(4, device=device)))
    assert_gradient_penalty_matches(lambda x, w, b: ops.conv2d(x, w, b, padding=1),
                                    lambda x, w, b: F.conv2d(x, w, b, padding=1), x, w, b)


# ------------------------------------------------------------------------------------------------
# batch_norm
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("fuse_relu", [False, True], ids=["", "fuse_relu"])
def test_batch_norm_gradgradcheck(device, training, affine, fuse_relu):
    x = _leaf(3, 2, 2, device=device, scale=2.0, shift=0.5)
    running_mean = torch.randn(2, device=device, dtype=torch.float64)
    running_var = torch.rand(2, device=device, dtype=torch.float64) + 0.5

    def fn(x, *params):
        # Fresh running stats per call: training updates them in place.
        return ops.batch_norm(x, running_mean.clone(), running_var.clone(), *params, training=training,
                              fuse_relu=fuse_relu)

    params = (_leaf(2, device=device), _leaf(2, device=device)) if affine else ()
    assert_gradgradcheck(fn, x, *params, fast_mode=True)


@pytest.mark.slow
def test_batch_norm_gradgradcheck_full_jacobian(device):
    x, w, b = _leaf(3, 2, 2, device=device), _leaf(2, device=device), _leaf(2, device=device)
    assert_gradgradcheck(lambda x, w, b: ops.batch_norm(x, None, None, w, b, training=True), x, w, b)


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("fuse_relu", [False, True], ids=["", "fuse_relu"])
def test_batch_norm_gradient_penalty_matches_torch(device, training, fuse_relu):
    x = _leaf(4, 3, 5, device=device, scale=2.0, shift=0.5)
    w, b = _leaf(3, device=device), _leaf(3, device=device)
    running_mean = torch.randn(3, device=device, dtype=torch.float64)
    running_var = torch.rand(3, device=device, dtype=torch.float64) + 0.5
    torch_activation = F.relu if fuse_relu else (lambda y: y)
    assert_gradient_penalty_matches(
        lambda x, w, b: ops.batch_norm(x, running_mean.clone(), running_var.clone(), w, b, training=training,
                                       fuse_relu=fuse_relu),
        lambda x, w, b: torch_activation(F.batch_norm(x, running_mean.clone(), running_var.clone(), w, b,
                                                      training=training)),
        x, w, b,
    )


def test_batch_norm_module_gradient_penalty_in_float32_matches_torch(device):
    x = _leaf(4, 3, 3, 2, device=device, dtype=torch.float32)
    ours, theirs = ops.BatchNorm2d(3).to(device), torch.nn.BatchNorm2d(3).to(device)
    grads = []
    for module in (ours, theirs):
        xi = x.detach().clone().requires_grad_()
        g, = torch.autograd.grad(module(xi).pow(2).sum(), xi, create_graph=True)
        (g ** 2).sum().backward()
        grads.append((xi.grad, module.weight.grad, module.bias.grad))
    for name, a, e in zip(("x", "weight", "bias"), *grads):
        assert_close(a, e, name=f"gradient of the penalty w.r.t. {name}")


# ------------------------------------------------------------------------------------------------
# layer_norm
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalized_shape", [(4,), (2, 3)], ids=["1d", "2d"])
@pytest.mark.parametrize("affine", ["weight_and_bias", "weight", "bias", "none"])
def test_layer_norm_gradgradcheck(device, normalized_shape, affine):
    x = _leaf(2, *normalized_shape, device=device, scale=2.0, shift=0.5)
    w = _leaf(*normalized_shape, device=device) if affine in ("weight_and_bias", "weight") else None
    b = _leaf(*normalized_shape, device=device) if affine in ("weight_and_bias", "bias") else None
    params = [p for p in (w, b) if p is not None]

    def fn(x, *params):
        given = iter(params)
        return ops.layer_norm(x, normalized_shape, next(given) if w is not None else None,
                              next(given) if b is not None else None)

    assert_gradgradcheck(fn, x, *params, fast_mode=True)


def test_layer_norm_gradgradcheck_full_jacobian(device):
    x, w, b = _leaf(3, 4, device=device), _leaf(4, device=device), _leaf(4, device=device)
    assert_gradgradcheck(lambda x, w, b: ops.layer_norm(x, (4,), w, b), x, w, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_norm_gradient_penalty_matches_torch(device, dtype):
    x = _leaf(3, 2, 5, device=device, dtype=dtype, scale=2.0, shift=0.5)
    w, b = _leaf(5, device=device, dtype=dtype), _leaf(5, device=device, dtype=dtype)
    assert_gradient_penalty_matches(lambda x, w, b: ops.layer_norm(x, (5,), w, b),
                                    lambda x, w, b: F.layer_norm(x, (5,), w, b), x, w, b)


# ------------------------------------------------------------------------------------------------
# Without create_graph, the backward stays on the fast kernels
# ------------------------------------------------------------------------------------------------


# conv2d's kernels are differentiable ops themselves; only its activation derivative has a
# create_graph formulation in torch ops (activation_grad).
@pytest.mark.parametrize("module,formulation,call", [
    (conv_op, "activation_grad", lambda x: ops.conv2d(x, torch.randn(2, 3, 2, 2, dtype=x.dtype), activation="gelu")),
    (batchnorm_op, "_differentiable_backward", lambda x: ops.batch_norm(x, None, None, training=True, fuse_relu=True)),
    (layernorm_op, "_differentiable_backward", lambda x: ops.layer_norm(x, (3,))),
], ids=["conv2d", "batch_norm", "layer_norm"])
def test_first_order_backward_does_not_take_the_differentiable_path(device, monkeypatch, module, formulation, call):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the create_graph formulation ran for a plain backward")

    monkeypatch.setattr(module, formulation, must_not_run)
    x = torch.randn(2, 3, 3, 3, device=device, requires_grad=True)
    call(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
