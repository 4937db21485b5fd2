"""ReLU and GELU: gradcheck, parity with the references and torch, special values, layouts,
in-place ReLU, modules, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import PARITY_DTYPES, assert_close, assert_gradcheck, assert_matches
from tritonprop import backend
from tritonprop.kernels import elementwise as K
from tritonprop.ops.activations import GELU, ReLU, gelu, relu
from tritonprop.ops.reference import activations as reference
from tritonprop.ops.reference import activations_numpy

# (our op, its torch twin, the reference, keyword arguments): one row per activation.
ACTIVATIONS = {
    "relu": (relu, F.relu, reference.relu, {}),
    "gelu": (gelu, F.gelu, reference.gelu, {}),
    "gelu_tanh": (gelu, F.gelu, reference.gelu, {"approximate": "tanh"}),
}

# Views of a (2, 3, 4, 5) tensor: the kernels read each by its strides.
VIEWS = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "transposed": lambda t: t.transpose(1, 3),
    "sliced": lambda t: t[:, 1:, ::2],
}


def make_input(shape=(2, 3, 4, 5), view="contiguous", device="cpu", dtype=torch.float32, away_from_zero=False):
    x = torch.randn(shape, device=device)
    if away_from_zero:
        # gradcheck's finite differences (eps 1e-6) must not straddle ReLU's kink.
        x = x.sign() * (x.abs() + 0.1)
    return VIEWS[view](x.to(dtype)).requires_grad_()


# ------------------------------------------------------------------------------------------------
# gradcheck (float64): fast mode over the grid, the full Jacobian on small inputs (and the grid
# under -m slow)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gradcheck(device, name, view):
    ours, _, _, kwargs = ACTIVATIONS[name]
    x = make_input(view=view, device=device, away_from_zero=name == "relu")
    assert_gradcheck(ours, x, fast_mode=True, **kwargs)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gradcheck_full_jacobian_small(device, name):
    ours, _, _, kwargs = ACTIVATIONS[name]
    x = make_input((3, 4), device=device, away_from_zero=name == "relu")
    assert_gradcheck(ours, x, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gradcheck_full_jacobian_grid(device, name, view):
    ours, _, _, kwargs = ACTIVATIONS[name]
    x = make_input(view=view, device=device, away_from_zero=name == "relu")
    assert_gradcheck(ours, x, **kwargs)


def test_relu_gradient_at_zero_and_nan_is_torchs(device):
    # relu'(0) = 0 for both signs of zero; torch lets the gradient through at nan (it tests
    # y <= 0) and selects instead of multiplying, so an infinite upstream gradient gives 0.
    x = torch.tensor([0.0, -0.0, float("nan"), 2.0, -3.0, 0.0], device=device, requires_grad=True)
    upstream = torch.tensor([5.0, 5.0, 7.0, 3.0, float("inf"), float("inf")], device=device)
    xr = x.detach().clone().requires_grad_()
    relu(x).backward(upstream)
    F.relu(xr).backward(upstream)
    assert torch.equal(x.grad, xr.grad), (x.grad, xr.grad)
    assert x.grad.tolist() == [0.0, 0.0, 7.0, 3.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------------
# Parity with the naive reference and with torch
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_matches_reference_and_torch(device, name, view, dtype):
    ours, theirs, ref, kwargs = ACTIVATIONS[name]
    x = make_input(view=view, device=device, dtype=dtype)
    out = assert_matches(ours, {"reference": ref, "torch": theirs}, x, **kwargs)
    assert out.dtype == dtype
    assert out.stride() == theirs(x.detach(), **kwargs).stride()


@pytest.mark.parametrize("shape", [(), (1,), (7,), (2051,), (3, 1, 1031)], ids=str)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_ragged_sizes_across_several_programs(device, name, shape):
    ours, theirs, ref, kwargs = ACTIVATIONS[name]
    x = torch.randn(shape, device=device, requires_grad=True)
    assert_matches(ours, {"reference": ref, "torch": theirs}, x, **kwargs)


# Special values: signed zeros, infinities, nan, and magnitudes where erf and tanh saturate.
SPECIAL = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 20.0, -20.0, 1e4, -1e4, 5.0, -5.0]

# The interpreter computes with numpy, which warns about the inf * 0 and exp overflow that these
# inputs produce on purpose.
numpy_overflow_is_expected = pytest.mark.filterwarnings(
    "ignore:invalid value encountered:RuntimeWarning", "ignore:overflow encountered:RuntimeWarning")


@numpy_overflow_is_expected
@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_special_values_match_torch(device, name, dtype):
    # The oracle is torch's formula in float64, rounded to the dtype: torch's own vectorised
    # float32/bfloat16 CPU gelu returns nan at +inf where its scalar and CUDA kernels (and the
    # formula) give inf.
    ours, theirs, _, kwargs = ACTIVATIONS[name]
    x = torch.tensor(SPECIAL, device=device, dtype=dtype, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    y, y64 = ours(x, **kwargs), theirs(x64, **kwargs)
    y.backward(torch.ones_like(y))
    y64.backward(torch.ones_like(y64))
    assert_close(y, y64.detach().to(dtype), name="forward")
    assert_close(x.grad, x64.grad.to(dtype), name="gradient")


@numpy_overflow_is_expected
def test_gelu_tanh_saturates_without_nan_at_large_magnitudes(device):
    x = torch.tensor([20.0, -20.0, 1e4, -1e4, 1e10, -1e10], device=device, requires_grad=True)
    y = gelu(x, approximate="tanh")
    y.backward(torch.ones_like(y))
    assert y.tolist() == [20.0, -0.0, 1e4, -0.0, 1e10, -0.0]
    assert x.grad.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------


def test_dense_layouts_take_the_flat_path_and_views_do_not():
    x = torch.randn(2, 3, 4, 5)
    for t in (x, x.contiguous(memory_format=torch.channels_last), x.transpose(0, 2)):
        assert K.plan([t, torch.empty_like(t)], K.memory_order(t)).flat
    sliced = x[:, :, ::2]
    assert not K.plan([sliced, torch.empty_like(sliced)], K.memory_order(sliced)).flat


def test_expanded_input_and_upstream_gradient(device):
    x = torch.randn(1, 5, device=device).expand(4, 5).requires_grad_()
    for name, (ours, theirs, _, kwargs) in ACTIVATIONS.items():
        y, ye = ours(x, **kwargs), theirs(x, **kwargs)
        assert_close(y, ye, name=f"{name} forward")
        # .sum() hands the backward an all-stride-0 gradient.
        assert_close(torch.autograd.grad(y.sum(), x)[0], torch.autograd.grad(ye.sum(), x)[0], name=f"{name} grad")


def test_views_with_more_axes_than_the_kernel_addresses(device):
    # Sliced in every dim, a 5-D view keeps five axes after merging: it is staged through a copy.
    x = torch.randn(3, 4, 5, 6, 7, device=device)[::2, ::2, ::2, ::2, ::2].requires_grad_()
    assert K.plan([x, torch.empty_like(x)], K.memory_order(x)) is None
    for name, (ours, theirs, ref, kwargs) in ACTIVATIONS.items():
        assert_matches(ours, {"torch": theirs}, x, **kwargs)
    h = torch.randn(3, 4, 5, 6, 7, device=device)
    expected = h.clone()
    relu(h[::2, ::2, ::2, ::2, ::2], inplace=True)
    F.relu(expected[::2, ::2, ::2, ::2, ::2], inplace=True)
    assert torch.equal(h, expected)


# ------------------------------------------------------------------------------------------------
# In-place ReLU
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["whole", "strided_slice"])
def test_relu_in_place_matches_torch(device, view):
    base = torch.randn(4, 6, device=device, requires_grad=True)
    select = (lambda t: t) if view == "whole" else (lambda t: t[:, ::2])
    results = []
    for fn in (relu, F.relu):
        leaf = base.detach().clone().requires_grad_()
        hidden = leaf * 2.0
        target = select(hidden)
        out = fn(target, inplace=True)
        assert out is target
        hidden.backward(torch.arange(24.0, device=device).reshape(4, 6))
        results.append((hidden.detach(), leaf.grad))
    (h, g), (he, ge) = results
    assert torch.equal(h, he)
    assert torch.equal(g, ge)


def test_relu_in_place_errors_like_torch_and_leaves_input_untouched():
    leaf = torch.randn(6, requires_grad=True)
    before = leaf.detach().clone()
    with pytest.raises(RuntimeError, match="relu: a leaf Variable that requires grad is being used in an in-place"):
        relu(leaf, inplace=True)
    with pytest.raises(RuntimeError, match="relu: a view of a leaf Variable that requires grad is being used"):
        relu(leaf[::2], inplace=True)
    assert torch.equal(leaf.detach(), before)
    expanded = torch.randn(1, 4).expand(3, 4)
    with pytest.raises(RuntimeError, match="relu: unsupported operation: more than one element of the written-to"):
        relu(expanded, inplace=True)
    with torch.no_grad():  # allowed in torch without autograd, and here
        assert relu(leaf, inplace=True) is leaf
    assert torch.equal(leaf.detach(), before.clamp_min(0))


def test_in_place_relu_on_a_tensor_another_op_saved_is_caught_by_autograd():
    x = torch.randn(5, requires_grad=True)
    h = x * 1.0
    y = h * h  # saves h for its backward
    relu(h, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# ------------------------------------------------------------------------------------------------
# Modules, autocast, empty input, backend routing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ours,theirs", [
    (ReLU(), torch.nn.ReLU()), (ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
    (GELU(), torch.nn.GELU()), (GELU("tanh"), torch.nn.GELU("tanh")),
], ids=["ReLU", "ReLU_inplace", "GELU", "GELU_tanh"])
def test_modules_are_drop_in(device, ours, theirs):
    assert isinstance(ours, type(theirs))
    ours.load_state_dict(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    x = torch.randn(3, 7, device=device)
    y, ye = ours(x.clone()), theirs(x.clone())
    assert_close(y, ye)


def test_autocast_leaves_the_dtype_alone_like_torch(device):
    with torch.autocast(device.type, dtype=torch.bfloat16):
        for x in (torch.randn(4, 5, device=device), torch.randn(4, 5, device=device, dtype=torch.bfloat16)):
            for name, (ours, theirs, _, kwargs) in ACTIVATIONS.items():
                y, ye = ours(x, **kwargs), theirs(x, **kwargs)
                assert y.dtype == ye.dtype == x.dtype, name
                assert_close(y, ye, name=name)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 3)], ids=str)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_empty_input(device, name, shape):
    ours, theirs, _, kwargs = ACTIVATIONS[name]
    x = torch.randn(shape, device=device, requires_grad=True)
    out = assert_matches(ours, {"torch": theirs}, x, **kwargs)
    assert out.shape == shape


def test_relu_in_place_on_an_empty_tensor(device):
    h = torch.randn(2, 0, 3, device=device)
    assert relu(h, inplace=True) is h and h.shape == (2, 0, 3)


def test_reference_backend_routes_to_the_formulas(device, monkeypatch):
    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("the Triton kernel ran under TRITONPROP_BACKEND=reference")

    monkeypatch.setattr(K, "forward", kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    x = torch.randn(3, 5, device=device)
    for name, (ours, theirs, _, kwargs) in ACTIVATIONS.items():
        assert_close(ours(x, **kwargs), theirs(x, **kwargs), name=name)
    h = x.clone()
    relu(h, inplace=True)
    assert torch.equal(h, F.relu(x))


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call,error,match", [
    (lambda: gelu(torch.randn(3), approximate="sigmoid"), RuntimeError,
     "gelu: approximate argument must be either none or tanh, got 'sigmoid'"),
    (lambda: gelu(torch.randn(3), approximate=None), TypeError, "gelu: approximate must be a str"),
    (lambda: gelu(np.ones(3)), TypeError, "gelu: input must be a torch.Tensor"),
    (lambda: relu([1.0, -1.0]), TypeError, "relu: input must be a torch.Tensor"),
    (lambda: gelu(torch.ones(3, dtype=torch.int64)), NotImplementedError,
     "gelu: input of dtype torch.int64 is not supported"),
    (lambda: relu(torch.ones(3, dtype=torch.int32)), NotImplementedError,
     "relu: input of dtype torch.int32 is not supported"),
    (lambda: relu(torch.ones(3, dtype=torch.bool)), RuntimeError, "relu: Boolean inputs not supported"),
    (lambda: gelu(torch.ones(3, dtype=torch.bool)), NotImplementedError,
     "gelu: input of dtype torch.bool is not supported"),
    (lambda: relu(torch.ones(3, dtype=torch.complex64)), NotImplementedError,
     "relu: input of dtype torch.complex64 is not supported"),
    (lambda: GELU("sigmoid")(torch.randn(3)), RuntimeError,
     "gelu: approximate argument must be either none or tanh, got 'sigmoid'"),
], ids=["approximate_value", "approximate_type", "gelu_not_tensor", "relu_not_tensor", "gelu_integer",
        "relu_integer", "relu_bool", "gelu_bool", "relu_complex", "module_approximate_value"])
def test_bad_arguments_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_torch_raises_the_same_error_types():
    with pytest.raises(RuntimeError, match="approximate argument must be either none or tanh"):
        F.gelu(torch.randn(3), approximate="sigmoid")
    with pytest.raises(RuntimeError, match="approximate argument must be either none or tanh"):
        torch.nn.GELU("sigmoid")(torch.randn(3))
    with pytest.raises(TypeError):
        F.gelu(torch.randn(3), approximate=None)
    with pytest.raises(NotImplementedError):
        F.gelu(torch.ones(3, dtype=torch.int64))
    with pytest.raises(NotImplementedError):
        F.gelu(torch.ones(3, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="Boolean inputs not supported for relu"):
        F.relu(torch.ones(3, dtype=torch.bool))
    with pytest.raises(NotImplementedError):
        F.relu(torch.ones(3, dtype=torch.complex64))


# ------------------------------------------------------------------------------------------------
# The numpy reference with the hand-derived backward
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_numpy_reference_matches_autograd(name):
    _, theirs, _, kwargs = ACTIVATIONS[name]
    x = make_input((4, 6), dtype=torch.float64, away_from_zero=True)
    y = theirs(x, **kwargs)
    dy = torch.randn_like(y)
    y.backward(dy)
    if name == "relu":
        y_np, cache = activations_numpy.relu_forward(x.detach().numpy())
        dx = activations_numpy.relu_backward(dy.numpy(), cache)
    else:
        y_np, cache = activations_numpy.gelu_forward(x.detach().numpy(), **kwargs)
        dx = activations_numpy.gelu_backward(dy.numpy(), cache)
    assert_close(torch.from_numpy(y_np), y.detach(), name="y")
    assert_close(torch.from_numpy(dx), x.grad, name="dx")
