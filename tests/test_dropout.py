"""Dropout: the mask's statistics and reproducibility, exact scaling, the backward's mask, gradcheck,
parity with the Philox reference, layouts, in-place, eval mode, modules, errors.

The mask cannot equal torch's, so where other ops compare with torch these tests compare with
ops/reference/dropout.py, which rebuilds the kernel's mask from its seed bit for bit, and check
the mask's statistics against the binomial distribution it should follow.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close, assert_gradcheck, assert_matches, seeded
from tritonprop import backend
from tritonprop.kernels import dropout as K
from tritonprop.kernels import elementwise
from tritonprop.ops.dropout import Dropout, dropout
from tritonprop.ops.reference import activations_numpy
from tritonprop.ops.reference import dropout as reference

ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

VIEWS = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "transposed": lambda t: t.transpose(1, 3),
    "sliced": lambda t: t[:, 1:, ::2],
}


def make_input(shape=(2, 3, 4, 5), view="contiguous", device="cpu", dtype=torch.float32):
    # No zeros, so a zero in the output always means "dropped".
    x = torch.randn(shape, device=device)
    x = x.sign() * (x.abs() + 0.1)
    return VIEWS[view](x.to(dtype)).requires_grad_()


def scaled(t, p):
    """t / (1 - p) as the kernel computes it: the fp32 scale, in fp32 (fp64 for fp64), rounded once."""
    compute = torch.float64 if t.dtype == torch.float64 else torch.float32
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32).to(compute)
    return (t.to(compute) * scale).to(t.dtype)


def assert_same(actual, expected, name="output"):
    """Bit-for-bit equal, except bfloat16 values under the interpreter.

    Triton 3.6's interpreter casts float32 to bfloat16 by truncation where compiled kernels (and
    torch) round to nearest even, so interpreted bf16 values can be one ulp off: there the zero
    pattern (the mask) must still match exactly and the values agree to the bf16 tolerance.
    """
    if actual.dtype == torch.bfloat16 and backend.interpreting():
        assert torch.equal(actual == 0, expected == 0), f"{name}: the masks differ"
        assert_close(actual, expected, name=name)
    else:
        assert torch.equal(actual, expected), name


def within_sigmas(observed, probability, trials, sigmas=6.0):
    """|observed - expected| of a binomial fraction is within `sigmas` standard deviations."""
    std = math.sqrt(probability * (1 - probability) / trials)
    return abs(observed - probability) <= sigmas * std


# ------------------------------------------------------------------------------------------------
# The mask: statistics, reproducibility, exact scaling, the backward's mask
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.85])
def test_fraction_dropped_is_binomial_in_every_lane(device, p):
    # Elements 4g .. 4g+3 share one Philox call; each lane must drop with probability p on its
    # own, and two lanes of a call must be independent (both kept with probability (1 - p)^2).
    n = 40_000
    kept = dropout(torch.ones(n, device=device), p).reshape(-1, 4) != 0
    assert within_sigmas(1 - kept.float().mean().item(), p, n)
    for lane in range(4):
        assert within_sigmas(1 - kept[:, lane].float().mean().item(), p, n // 4), lane
    both = (kept[:, 0] & kept[:, 1]).float().mean().item()
    assert within_sigmas(both, (1 - p) ** 2, n // 4)


def test_manual_seed_reproduces_and_consecutive_calls_differ(device):
    x = torch.ones(4000, device=device)
    torch.manual_seed(3)
    first, second = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.5), first)
    assert torch.equal(dropout(x, 0.5), second)
    # Consecutive masks are independent: both kept with probability 1/4.
    both = ((first != 0) & (second != 0)).float().mean().item()
    assert within_sigmas(both, 0.25, x.numel())


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("p", [0.2, 0.7])
def test_kept_values_are_scaled_exactly_and_the_backward_uses_the_same_mask(device, dtype, p):
    x = make_input((3, 677), device=device, dtype=dtype)
    y = dropout(x, p)
    assert y.dtype == dtype
    kept = y != 0
    assert kept.any() and not kept.all()
    assert_same(y, torch.where(kept, scaled(x.detach(), p), 0.0))
    upstream = torch.randn(y.shape, device=device).to(dtype)
    y.backward(upstream)
    assert_same(x.grad, torch.where(kept, scaled(upstream, p), 0.0), name="gradient")


def test_backward_keeps_only_the_seed(device):
    x = make_input((64, 33), device=device)
    saved = dropout(x, 0.5).grad_fn.saved_tensors
    assert [(t.dtype, t.numel()) for t in saved] == [(torch.int64, 1)]


# The interpreter computes with numpy, which warns about the inf * 0 these tests make on purpose.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_p_one_drops_everything_like_torch(device):
    # torch multiplies by a zero mask: -0 for negatives, nan for inf and nan.
    x = torch.tensor([1.0, -2.0, float("inf"), float("nan")], device=device, requires_grad=True)
    y = dropout(x, 1.0)
    expected = F.dropout(x.detach(), 1.0)
    assert_close(y, expected)
    assert torch.equal(torch.signbit(y[:2]), torch.signbit(expected[:2]))
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_dropped_infinities_become_nan_like_torch(device):
    x = torch.full((64,), float("inf"), device=device)
    y = dropout(x, 0.5)
    assert ((y == float("inf")) | y.isnan()).all() and y.isnan().any() and y.isinf().any()
    torch.manual_seed(0)
    expected = F.dropout(torch.full((64,), float("inf")), 0.5)
    assert ((expected == float("inf")) | expected.isnan()).all()


# ------------------------------------------------------------------------------------------------
# gradcheck (float64): the seed is reset inside the function, so every evaluation has one mask
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.3, 0.6])
@pytest.mark.parametrize("view", VIEWS)
def test_gradcheck(device, view, p):
    x = make_input(view=view, device=device)
    assert_gradcheck(seeded(dropout), x, p, fast_mode=True)


def test_gradcheck_full_jacobian_small(device):
    x = make_input((3, 5), device=device)
    assert_gradcheck(seeded(dropout), x, 0.4)


@pytest.mark.slow
@pytest.mark.parametrize("p", [0.3, 0.6])
@pytest.mark.parametrize("view", VIEWS)
def test_gradcheck_full_jacobian_grid(device, view, p):
    x = make_input(view=view, device=device)
    assert_gradcheck(seeded(dropout), x, p)


# ------------------------------------------------------------------------------------------------
# Parity with the Philox reference (bit for bit) and layouts
# ------------------------------------------------------------------------------------------------


def _run(fn, x, p, upstream):
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    y = seeded(fn)(x, p)
    y.backward(upstream)
    return y, x.grad


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("view", VIEWS)
def test_matches_the_reference_mask_bit_for_bit(device, view, dtype):
    x = make_input(view=view, device=device, dtype=dtype)
    upstream = torch.randn(x.shape, device=device).to(dtype)
    y, dx = _run(dropout, x, 0.35, upstream)
    y_ref, dx_ref = _run(reference.dropout, x, 0.35, upstream)
    assert_same(y, y_ref)
    assert_same(dx, dx_ref, name="gradient")
    assert y.stride() == F.dropout(x.detach(), 0.35).stride()


@pytest.mark.parametrize("view", ["channels_last", "transposed", "sliced", "expanded", "five_axes"])
def test_mask_follows_the_logical_index_whatever_the_layout(device, view):
    if view == "expanded":
        x = torch.randn(1, 7, 9, device=device).expand(5, 7, 9)
    elif view == "five_axes":
        x = torch.randn(3, 4, 5, 6, 7, device=device)[::2, ::2, ::2, ::2, ::2]
        # More axes than the kernel addresses: staged through a contiguous copy.
        assert elementwise.plan([x, torch.empty_like(x)], range(x.dim())) is None
    else:
        x = make_input(view=view, device=device).detach()
    assert not x.is_contiguous()
    expected = seeded(dropout)(x.contiguous(), 0.5)
    assert torch.equal(seeded(dropout)(x, 0.5), expected)


def test_several_programs_and_ragged_sizes(device):
    for shape in ((), (1,), (3,), (4,), (5,), (1027,), (4099,)):
        x = torch.randn(shape, device=device)
        assert torch.equal(seeded(dropout)(x, 0.5), seeded(reference.dropout)(x, 0.5)), shape


def test_expanded_upstream_gradient(device):
    x = make_input((6, 7), device=device)
    y = seeded(dropout)(x, 0.5)
    y.sum().backward()  # an all-stride-0 dy
    assert torch.equal(x.grad, torch.where(y != 0, scaled(torch.ones_like(x.grad), 0.5), 0.0))


# ------------------------------------------------------------------------------------------------
# Modes, in-place, modules, autocast, backend routing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["eval", "p_zero", "empty", "eval_in_place", "eval_integer"])
def test_returns_the_input_itself_like_torch(device, case):
    x = torch.randn(0 if case == "empty" else 5, 3, device=device, requires_grad=True)
    kwargs = dict(p=0.5, training=case not in ("eval", "eval_in_place", "eval_integer"))
    if case == "p_zero":
        kwargs["p"] = 0.0
    if case == "eval_in_place":
        kwargs["inplace"] = True
    if case == "eval_integer":
        x = torch.ones(5, 3, dtype=torch.int64, device=device)
    assert F.dropout(x, **kwargs) is x
    state = torch.get_rng_state()
    assert dropout(x, **kwargs) is x
    assert torch.equal(torch.get_rng_state(), state), "no randomness is drawn"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_torch_sample_inputs_match_torch(device, dtype):
    # torch's own OpInfo samples: 0-d to 2-D inputs, p in {0, 0.5, 1}, training on and off. Those
    # with 0 < p < 1 in training are random (torch's mask is not ours): they are checked against
    # the reference, which rebuilds our mask; the rest must match torch exactly.
    pytest.importorskip("expecttest", reason="torch's OpInfo database needs expecttest (requirements-dev.txt)")
    from torch.testing._internal.common_methods_invocations import op_db

    op = next(op for op in op_db if op.name == "nn.functional.dropout")
    samples = list(op.sample_inputs(device, dtype, requires_grad=True))
    assert len(samples) > 10
    for sample in samples:
        p, training = sample.kwargs.get("p", 0.5), sample.kwargs.get("training", True)
        oracle = seeded(reference.dropout) if training and 0 < p < 1 else op.op
        assert_matches(seeded(dropout), {"oracle": oracle}, sample.input, *sample.args, **sample.kwargs)


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3)], ids=str)
def test_empty_input_in_training_is_returned_with_its_gradient(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    y = dropout(x, 0.5)
    assert y is x is F.dropout(x, 0.5)
    (x * 2.0).sum().backward()
    assert x.grad.shape == shape


@pytest.mark.parametrize("view", ["whole", "strided_slice"])
def test_in_place_writes_the_out_of_place_result_and_differentiates(device, view):
    select = (lambda t: t) if view == "whole" else (lambda t: t[:, ::2])
    base = make_input((4, 6), device=device).detach()
    expected = seeded(dropout)(select(base * 2.0), 0.5)

    leaf = base.clone().requires_grad_()
    hidden = leaf * 2.0
    target = select(hidden)
    assert seeded(dropout)(target, 0.5, inplace=True) is target
    assert torch.equal(select(hidden.detach()), expected)
    upstream = torch.arange(24.0, device=device).reshape(4, 6)
    hidden.backward(upstream)
    # Through the dropped-out part the gradient is upstream * mask / (1 - p); elsewhere upstream;
    # then times the 2 of `leaf * 2`.
    local = torch.ones_like(upstream)
    select(local).copy_(torch.where(expected != 0, scaled(torch.ones_like(expected), 0.5), 0.0))
    assert torch.equal(leaf.grad, upstream * local * 2.0)


def test_in_place_errors_like_torch_and_leaves_input_untouched():
    leaf = torch.randn(6, requires_grad=True)
    before = leaf.detach().clone()
    with pytest.raises(RuntimeError, match="dropout: a leaf Variable that requires grad is being used in an in-pl"):
        dropout(leaf, 0.5, inplace=True)
    assert torch.equal(leaf.detach(), before)
    with pytest.raises(RuntimeError, match="dropout: unsupported operation: more than one element of the written"):
        dropout(torch.randn(1, 4).expand(3, 4), 0.5, inplace=True)


def test_module_is_drop_in(device):
    theirs = torch.nn.Dropout(0.3, inplace=False)
    ours = Dropout(0.3)
    assert isinstance(ours, torch.nn.Dropout)
    ours.load_state_dict(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    x = torch.randn(50, 40, device=device)
    assert torch.equal(seeded(ours)(x), seeded(dropout)(x, 0.3))
    ours.eval()
    assert ours(x) is x
    assert Dropout(0.5, inplace=True).inplace


def test_autocast_leaves_the_dtype_alone_like_torch(device):
    with torch.autocast(device.type, dtype=torch.bfloat16):
        for x in (torch.randn(4, 5, device=device), torch.randn(4, 5, device=device, dtype=torch.bfloat16)):
            assert dropout(x, 0.5).dtype == F.dropout(x, 0.5).dtype == x.dtype


def test_reference_backend_draws_the_same_masks(device, monkeypatch):
    x = make_input((5, 9), device=device).detach()
    expected = seeded(dropout)(x, 0.5)

    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("the Triton kernel ran under TRITONPROP_BACKEND=reference")

    monkeypatch.setattr(K, "forward", kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    assert torch.equal(seeded(dropout)(x, 0.5), expected)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [-0.1, 1.5, float("inf"), torch.tensor(1.5)], ids=["negative", "above_one", "inf",
                                                                               "tensor_above_one"])
@pytest.mark.parametrize("training", [True, False])
def test_probability_outside_zero_one_raises_like_torch(p, training):
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        F.dropout(torch.randn(3), p, training)
    with pytest.raises(ValueError, match=r"dropout: p has to be between 0 and 1, but got (-0.1|1.5|inf)"):
        dropout(torch.randn(3), p, training)
    # The module is torch's own constructor, which checks p as F.dropout does.
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        Dropout(p)


@pytest.mark.parametrize("p", [float("nan"), np.float32("nan"), torch.tensor(float("nan"))],
                         ids=["float", "numpy", "tensor"])
@pytest.mark.parametrize("training", [True, False])
def test_nan_probability_raises_a_runtime_error_like_torch(p, training):
    # torch's Python range check lets NaN through; its C++ check refuses it, even in eval mode.
    with pytest.raises(RuntimeError, match="dropout probability has to be between 0 and 1, but got nan"):
        F.dropout(torch.randn(3), p, training)
    with pytest.raises(RuntimeError, match="dropout: p has to be between 0 and 1, but got nan"):
        dropout(torch.randn(3), p, training)
    # torch's constructor accepts NaN; the forward refuses it.
    module = Dropout(float("nan"))
    with pytest.raises(RuntimeError, match="dropout: p has to be between 0 and 1, but got nan"):
        module(torch.randn(3))


@pytest.mark.parametrize("p,error", [
    ("0.5", TypeError), (None, TypeError), (0.5j, TypeError), (torch.tensor([0.5]), TypeError),
    (torch.tensor([0.5, 0.2]), RuntimeError),
], ids=["str", "none", "complex", "one_element_1d_tensor", "two_element_tensor"])
def test_probability_that_is_not_a_real_scalar_raises_like_torch(p, error):
    with pytest.raises(error):
        F.dropout(torch.randn(3), p)
    with pytest.raises(error, match="dropout: p must be"):
        dropout(torch.randn(3), p)


@pytest.mark.parametrize("p,as_float", [
    (True, 1.0), (np.float32(0.25), 0.25), (np.int64(1), 1.0), (torch.tensor(0.25), 0.25), (torch.tensor(0.0), 0.0),
], ids=["bool", "numpy_float", "numpy_int", "0d_tensor", "0d_tensor_zero"])
def test_probability_as_any_real_scalar_torch_takes(device, p, as_float):
    x = make_input((5, 8), device=device).detach()
    assert F.dropout(x, p).shape == x.shape  # torch takes it too
    assert torch.equal(seeded(dropout)(x, p), seeded(dropout)(x, as_float))


@pytest.mark.parametrize("training", ["yes", None, 1, 0, torch.tensor(True), np.bool_(True)],
                         ids=["str", "none", "int_one", "int_zero", "tensor", "numpy_bool"])
def test_training_must_be_a_bool_like_torch(training):
    with pytest.raises(TypeError, match="must be bool"):
        F.dropout(torch.randn(3), 0.5, training)
    with pytest.raises(TypeError, match="dropout: training must be bool"):
        dropout(torch.randn(3), 0.5, training)
    with pytest.raises(TypeError, match="dropout: training must be bool"):
        dropout(torch.randn(0), 0.0, training)  # checked before the early returns, as in torch


@pytest.mark.parametrize("inplace", ["yes", 1, None, 0])
def test_inplace_takes_any_truthy_value_like_torch(device, inplace):
    x = make_input((4, 6), device=device).detach()
    target = x.clone()
    out = seeded(dropout)(target, 0.5, True, inplace)
    expected = seeded(dropout)(x, 0.5)
    assert torch.equal(out, expected)
    assert (out is target) == bool(inplace)
    assert torch.equal(target, expected if inplace else x)


def test_bad_inputs_name_the_argument():
    with pytest.raises(TypeError, match="dropout: input must be a torch.Tensor"):
        dropout(np.ones(3), 0.5)
    with pytest.raises(TypeError):
        F.dropout(np.ones(3), 0.5)


@pytest.mark.parametrize("dtype,p,error", [
    (torch.int64, 0.5, RuntimeError), (torch.bool, 0.5, RuntimeError),
    (torch.int64, 1.0, NotImplementedError), (torch.bool, 1.0, NotImplementedError),
    (torch.complex64, 0.5, NotImplementedError), (torch.complex64, 1.0, NotImplementedError),
], ids=["int", "bool", "int_p_one", "bool_p_one", "complex", "complex_p_one"])
def test_non_floating_inputs_in_training(dtype, p, error):
    x = torch.ones(3, dtype=dtype)
    if error is NotImplementedError and p == 1.0:
        # torch multiplies by a zero mask; we do not compute non-floating dropout.
        assert not F.dropout(x, p).any()
    else:
        with pytest.raises(error):
            F.dropout(x, p)
    with pytest.raises(error, match=f"dropout: input .*{dtype}"):
        dropout(x, p)
    # Outside training, with p = 0 or an empty tensor, both return the input, whatever its dtype.
    assert dropout(x, p, training=False) is x and dropout(x, 0.0) is x
    assert dropout(torch.ones(0, dtype=dtype), p) is not None


# ------------------------------------------------------------------------------------------------
# The numpy reference with the hand-derived backward, and Philox itself
# ------------------------------------------------------------------------------------------------


def test_numpy_reference_matches_autograd():
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    keep = torch.rand(6, 7) >= 0.4
    y = x * keep / 0.6
    dy = torch.randn_like(y)
    y.backward(dy)
    y_np, cache = activations_numpy.dropout_forward(x.detach().numpy(), keep.numpy(), 0.4)
    dx = activations_numpy.dropout_backward(dy.numpy(), cache)
    assert_close(torch.from_numpy(y_np), y.detach(), name="y")
    assert_close(torch.from_numpy(dx), x.grad, name="dx")


def test_philox_reference_matches_the_published_test_vectors():
    # Random123's known-answer tests for Philox4x32-10 (kat_vectors): counter, key -> output.
    # Our counter is (lo, hi, 0, 0) and the key is the seed's (lo, hi) words.
    words = reference.philox4x32(0, np.array([0], dtype=np.uint64))
    assert [int(w[0]) for w in words] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
