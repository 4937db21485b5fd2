"""LayerNorm: gradcheck, parity with the reference and with torch, long rows, layouts, module, errors."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import PARITY_DTYPES, assert_close, assert_gradcheck, assert_matches, record_copy_calls
from tritonprop import backend
from tritonprop.kernels import layernorm as K
from tritonprop.ops._autocast import cast_to_float32_on_cuda
from tritonprop.ops.layernorm import LayerNorm, layer_norm
from tritonprop.ops.reference import layernorm as reference
from tritonprop.ops.reference import layernorm_numpy

# (input shape, normalized_shape): odd and prime sizes, one and two normalized dims, a single
# row, one value per row.
SHAPES = [
    ((5, 7), (7,)),
    ((2, 3, 11), (11,)),
    ((2, 3, 4), (3, 4)),
    ((13,), (13,)),
    ((3, 1), (1,)),
]
SHAPE_IDS = ["rows,7", "B,T,11", "B,(3,4)", "one_row", "N=1"]
AFFINE = ["weight_and_bias", "weight_only", "bias_only", "none"]


def make_input(shape, device="cpu", dtype=torch.float32, shift=0.5, scale=2.0):
    x = torch.randn(shape, device=device, dtype=torch.float32) * scale + shift
    return x.to(dtype).requires_grad_()


def make_params(normalized_shape, device="cpu", dtype=torch.float32, affine="weight_and_bias"):
    weight = (torch.rand(normalized_shape, device=device) + 0.5).to(dtype).requires_grad_()
    bias = torch.randn(normalized_shape, device=device).to(dtype).requires_grad_()
    return (weight if affine in ("weight_and_bias", "weight_only") else None,
            bias if affine in ("weight_and_bias", "bias_only") else None)


def torch_in_float32(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    # The semantics of our low-precision layer norm: fp32 math, one rounding of y and dx at the end.
    weight, bias = (None if t is None else t.float() for t in (weight, bias))
    return F.layer_norm(input.float(), normalized_shape, weight, bias, eps).to(input.dtype)


# ------------------------------------------------------------------------------------------------
# gradcheck (float64)
# ------------------------------------------------------------------------------------------------


# Under the interpreter a full Jacobian costs two forwards per input element, so the grid uses
# gradcheck's fast mode (random projections of the Jacobian); two tiny cases get the full
# Jacobian below, and the whole grid gets it under -m slow.
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("shape,normalized_shape", SHAPES, ids=SHAPE_IDS)
def test_gradcheck_input_weight_bias(device, shape, normalized_shape, affine):
    x = make_input(shape, device)
    w, b = make_params(normalized_shape, device, affine=affine)
    assert_gradcheck(layer_norm, x, normalized_shape, w, b, fast_mode=True)


@pytest.mark.parametrize("shape,normalized_shape", [((2, 3), (3,)), ((2, 2, 2), (2, 2))], ids=["rows,3", "B,(2,2)"])
def test_gradcheck_full_jacobian_small(device, shape, normalized_shape):
    x = make_input(shape, device)
    w, b = make_params(normalized_shape, device)
    assert_gradcheck(layer_norm, x, normalized_shape, w, b)


@pytest.mark.slow
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("shape,normalized_shape", SHAPES, ids=SHAPE_IDS)
def test_gradcheck_full_jacobian_grid(device, shape, normalized_shape, affine):
    x = make_input(shape, device)
    w, b = make_params(normalized_shape, device, affine=affine)
    assert_gradcheck(layer_norm, x, normalized_shape, w, b)


# ------------------------------------------------------------------------------------------------
# Parity with the naive reference and with torch
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("shape,normalized_shape", SHAPES, ids=SHAPE_IDS)
def test_matches_reference_and_torch(device, shape, normalized_shape, dtype):
    # In fp16/bf16 torch's CPU kernel sums dweight and dbias in the input's dtype (up to ~8x our
    # error against the fp64 truth), so there torch's gradients are taken in float32 math and
    # rounded once, and its own kernel is compared on the forward.
    x = make_input(shape, device, dtype)
    w, b = make_params(normalized_shape, device, dtype)
    torch_oracle = F.layer_norm if dtype == torch.float32 else torch_in_float32
    out = assert_matches(layer_norm, {"reference": reference.layer_norm, "torch": torch_oracle},
                         x, normalized_shape, w, b, eps=1e-3)
    assert out.dtype == dtype
    assert_close(out, F.layer_norm(x.detach(), normalized_shape, w.detach(), b.detach(), eps=1e-3),
                 name="forward vs torch's own kernel")


@pytest.mark.parametrize("affine", AFFINE[1:])
def test_partial_affine_matches_torch(device, affine):
    x = make_input((4, 3, 6), device)
    w, b = make_params((3, 6), device, affine=affine)
    assert_matches(layer_norm, {"reference": reference.layer_norm, "torch": F.layer_norm}, x, (3, 6), w, b)


@pytest.mark.parametrize("affine", ["weight_and_bias", "weight_only", "bias_only"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_input_with_float32_parameters(device, dtype, affine):
    # Half activations beside float32 parameters, which torch accepts: y and dx keep the input's
    # dtype, dweight and dbias are float32 sums. torch's CPU kernel rounds the parameter
    # gradients through the input dtype, so the torch oracle runs in float32 math.
    x = make_input((6, 10), device, dtype)
    w, b = make_params((10,), device, torch.float32, affine=affine)
    out = assert_matches(layer_norm, {"reference": reference.layer_norm, "torch": torch_in_float32}, x, (10,), w, b)
    assert out.dtype == dtype
    y = layer_norm(x, (10,), w, b)
    grads = torch.autograd.grad(y, [t for t in (w, b) if t is not None], torch.ones_like(y))
    assert all(g.dtype == torch.float32 for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_rows_longer_than_one_block_loop_over_column_blocks(device, dtype):
    # 5000 columns exceed MAX_BLOCK_N: the forward loops over column blocks, and the backward
    # runs one program per column block, each taking the row sums over every block.
    assert K.plan_blocks(3, 5000)[1] < 5000 and K.plan_backward_blocks(3, 5000)[1] < 5000
    x = make_input((3, 5000), device, dtype, shift=3.0)
    w, b = make_params((5000,), device, dtype)
    assert_matches(layer_norm, {"reference": reference.layer_norm, "torch": torch_in_float32}, x, (5000,), w, b)


@pytest.mark.parametrize("blocks,chunks", [((1, 4), 3), ((2, 8), 2), ((4, 2), 5), ((8, 32), 1)])
def test_many_column_blocks_and_partials_are_exact(device, blocks, chunks):
    # Tiny blocks force several column blocks per row and many row chunks, so the Chan merge,
    # the cross-block row sums and the fixed-order partial sums run on a small input.
    x = make_input((5, 2, 7), device, shift=3.0).detach()
    w, b = (t.detach() for t in make_params((2, 7), device))
    y, mean, rstd = K.forward(x, 2, w, b, 1e-5, blocks=blocks)
    assert_close(y, F.layer_norm(x, (2, 7), w, b))

    dy = torch.randn_like(x)
    dx, dw, db = K.backward(dy, x, 2, w, b, mean, rstd, blocks=blocks, chunks=chunks)
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    F.layer_norm(xr, (2, 7), wr, br).backward(dy)
    assert_close(dx, xr.grad, name="dx")
    assert_close(dw, wr.grad, name="dweight")
    assert_close(db, br.grad, name="dbias")


@pytest.mark.parametrize("blocks", [None, (2, 16)], ids=["planned", "column_blocks"])
def test_statistics_stay_accurate_when_mean_dominates(device, blocks):
    # With mean/std = 1000, E[x^2] - E[x]^2 in fp32 loses most digits of the variance; the
    # per-block two-pass statistics merged with Chan's update keep it to fp32 accuracy. The truth
    # is fp64 on the same fp32 values.
    x = torch.randn(5, 300, device=device) + 1000.0
    _, mean, rstd = K.forward(x, 1, None, None, 1e-5, blocks=blocks)
    x64 = x.double()
    assert mean.dtype == rstd.dtype == torch.float32
    assert_close(mean.double(), x64.mean(dim=1), name="mean", dtype=torch.float32)
    assert_close(rstd.double().pow(-2), x64.var(dim=1, unbiased=False) + 1e-5, name="biased variance + eps",
                 dtype=torch.float32)


def test_statistics_are_float64_for_float64_input(device):
    x = torch.randn(3, 8, device=device, dtype=torch.float64)
    _, mean, rstd = K.forward(x, 1, None, None, 1e-5)
    assert mean.dtype == rstd.dtype == torch.float64
    assert_close(rstd, torch.rsqrt(x.var(dim=1, unbiased=False) + 1e-5), name="rstd")


def test_deterministic(device):
    x = make_input((9, 2, 12), device)
    w, b = make_params((2, 12), device)
    results = []
    for _ in range(2):
        xi, wi, bi = (t.detach().clone().requires_grad_() for t in (x, w, b))
        y = layer_norm(xi, (2, 12), wi, bi)
        y.backward(torch.arange(y.numel(), device=device).reshape(y.shape).sin())
        results.append([y, xi.grad, wi.grad, bi.grad])
    for a, e in zip(*results):
        assert torch.equal(a, e)


# ------------------------------------------------------------------------------------------------
# Layouts and views
# ------------------------------------------------------------------------------------------------

VIEWS = {
    # (base shape, view, normalized_shape)
    "transposed_leading": ((5, 3, 8), lambda t: t.transpose(0, 1), (8,)),
    "sliced_rows": ((3, 6, 8), lambda t: t[:, ::2], (8,)),
    "strided_columns": ((4, 10), lambda t: t[:, ::2], (5,)),
    "transposed_last_two": ((3, 4, 6), lambda t: t.transpose(1, 2), (4,)),
    # These two need a copy: three row axes; normalized dims that share no stride.
    "three_row_axes": ((4, 3, 4, 5), lambda t: t[::2, ::2, ::2], (5,)),
    "normalized_dims_strided": ((3, 4, 6), lambda t: t[:, ::2, ::2], (2, 3)),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_non_contiguous_views(device, view):
    base_shape, make_view, normalized_shape = VIEWS[view]
    x = make_view(torch.randn(base_shape, device=device))
    assert not x.is_contiguous()
    w, b = make_params(normalized_shape, device)
    out = assert_matches(layer_norm, {"torch": F.layer_norm}, x.requires_grad_(), normalized_shape, w, b)
    assert out.stride() == F.layer_norm(x.detach(), normalized_shape).stride()


@pytest.mark.parametrize("view", ["transposed_leading", "sliced_rows", "strided_columns", "transposed_last_two"])
def test_views_with_two_row_axes_are_not_copied(device, view, monkeypatch):
    base_shape, make_view, normalized_shape = VIEWS[view]
    x = make_view(torch.randn(base_shape, device=device)).requires_grad_()
    copies = record_copy_calls(monkeypatch)
    y = layer_norm(x, normalized_shape)
    y.backward(torch.ones_like(y))
    assert [s for s in copies if len(s) == x.dim()] == []


def test_expanded_and_transposed_upstream_gradients(device):
    x = make_input((3, 4, 6), device)
    w, b = make_params((6,), device)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    # .sum() hands the backward an expanded (all-stride-0) gradient.
    layer_norm(x, (6,), w, b).pow(2).sum().backward()
    F.layer_norm(xr, (6,), wr, br).pow(2).sum().backward()
    layer_norm(x, (6,), w, b).sum().backward()
    F.layer_norm(xr, (6,), wr, br).sum().backward()
    for ours, theirs, name in ((x.grad, xr.grad, "dx"), (w.grad, wr.grad, "dweight"), (b.grad, br.grad, "dbias")):
        assert_close(ours, theirs, name=f"{name} from an expanded dy")
    x.grad = xr.grad = None
    g = torch.randn(6, 4, 3, device=device).permute(2, 1, 0)
    layer_norm(x, (6,), w, b).backward(g)
    F.layer_norm(xr, (6,), wr, br).backward(g)
    assert_close(x.grad, xr.grad, name="dx from a permuted dy")


# ------------------------------------------------------------------------------------------------
# Module, autocast, reference backend
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(), dict(bias=False), dict(elementwise_affine=False), dict(eps=1e-3)],
                         ids=["affine", "no_bias", "no_affine", "eps"])
def test_module_loads_a_torch_state_dict_and_matches(device, kwargs):
    theirs = torch.nn.LayerNorm((3, 5), **kwargs).to(device)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    ours = LayerNorm((3, 5), **kwargs).to(device)
    assert isinstance(ours, torch.nn.LayerNorm)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for step in range(2):
        x = torch.randn(2, 4, 3, 5, device=device) * (step + 1) + step
        xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        y, ye = ours(xo), theirs(xt)
        assert_close(y, ye)
        y.backward(torch.cos(ye.detach()))
        ye.backward(torch.cos(ye.detach()))
        assert_close(xo.grad, xt.grad, name="dx")
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert_close(p.grad, q.grad, name=f"{name}.grad")
    back = torch.nn.LayerNorm((3, 5), **kwargs)
    back.load_state_dict(ours.state_dict())


def test_module_accepts_an_int_normalized_shape(device):
    ours, theirs = LayerNorm(6).to(device), torch.nn.LayerNorm(6).to(device)
    x = torch.randn(3, 6, device=device)
    assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_autocast_dtype_matches_torch(device, input_dtype):
    # On CUDA layer_norm is on autocast's float32 list; on the CPU it is on no list and keeps the
    # input's dtype (with float32 parameters beside a bfloat16 input).
    x = torch.randn(4, 7, device=device).to(input_dtype)
    ours, theirs = LayerNorm(7).to(device), torch.nn.LayerNorm(7).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y, ye = ours(x), theirs(x)
    assert y.dtype == ye.dtype
    assert_close(y, ye)


def test_cuda_autocast_casts_half_arguments_to_float32(monkeypatch):
    # What torch's float32 cast policy does on CUDA, checked without a GPU: float16/bfloat16
    # tensors become float32; float32, float64 and None are left alone; CPU autocast changes nothing.
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device_type=None: True)
    tensors = [torch.ones(2, dtype=d) for d in (torch.bfloat16, torch.float16, torch.float32, torch.float64)]
    cast = cast_to_float32_on_cuda("cuda", tensors + [None])
    assert [t.dtype for t in cast[:4]] == [torch.float32, torch.float32, torch.float32, torch.float64]
    assert cast[4] is None
    assert all(a is b for a, b in zip(cast_to_float32_on_cuda("cpu", tensors), tensors))


def test_reference_backend_routes_to_the_reference(device, monkeypatch):
    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("the Triton kernel ran under TRITONPROP_BACKEND=reference")

    monkeypatch.setattr(K, "forward", kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    x = make_input((3, 5), device)
    w, b = make_params((5,), device)
    assert_close(layer_norm(x, (5,), w, b), F.layer_norm(x, (5,), w, b))


# ------------------------------------------------------------------------------------------------
# Edge cases and errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,normalized_shape", [((0, 5), (5,)), ((3, 0), (0,)), ((2, 0, 4), (4,))],
                         ids=["no_rows", "empty_rows", "no_rows_3d"])
def test_empty_input(device, shape, normalized_shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    w, b = make_params(normalized_shape, device)
    y = layer_norm(x, normalized_shape, w, b)
    expected = F.layer_norm(x.detach(), normalized_shape, w.detach(), b.detach())
    assert y.shape == expected.shape == shape and y.dtype == expected.dtype
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("case,error,match", [
    ("trailing_dims_mismatch", RuntimeError,
     r"given normalized_shape=\[5\], expected input with shape \[\*, 5\], but got input of size \[2, 3, 4\]"),
    ("normalized_shape_longer_than_input", RuntimeError, r"normalized_shape=\[1, 2, 3, 4\]"),
    ("empty_normalized_shape", RuntimeError, "normalized_shape to be at least 1-dimensional"),
    ("int_normalized_shape", TypeError, "normalized_shape must be a tuple of ints, not int"),
    ("float_in_normalized_shape", TypeError, "tuple of ints, but found element of type float"),
    ("weight_shape", RuntimeError, r"expected weight to be of same shape as normalized_shape, but got weight of shape \[12\]"
                                   r" and normalized_shape = \[3, 4\]"),
    ("bias_shape", RuntimeError, r"expected bias to be of same shape as normalized_shape, but got bias of shape \[4, 3\]"),
    ("bool_in_normalized_shape", TypeError, "tuple of ints, but found element of type bool"),
    ("none_normalized_shape", TypeError, "normalized_shape must be a tuple of ints, not NoneType"),
    ("integer_input", NotImplementedError, "input of dtype torch.int64 is not supported"),
    ("integer_input_float_weight", RuntimeError, "weight has dtype torch.float32, but input is torch.int64"),
    ("integer_weight", RuntimeError, "weight must be a floating-point tensor"),
    ("weight_dtype", RuntimeError, "weight has dtype torch.float64, but input is torch.float32"),
    ("bias_dtype_differs_from_weight", RuntimeError, "bias has dtype torch.bfloat16, but weight has dtype torch.float32"),
    ("eps_none", TypeError, "eps must be a float, not NoneType"),
    ("eps_str", TypeError, "eps must be a float, not str"),
    ("input_not_tensor", TypeError, "input must be a torch.Tensor"),
    ("weight_not_tensor", TypeError, "weight must be a torch.Tensor"),
])
def test_bad_arguments_name_the_argument(case, error, match):
    x = torch.randn(2, 3, 4)
    kwargs = dict(input=x, normalized_shape=(3, 4), weight=torch.ones(3, 4), bias=torch.zeros(3, 4))
    if case == "trailing_dims_mismatch":
        kwargs.update(normalized_shape=(5,), weight=None, bias=None)
    elif case == "normalized_shape_longer_than_input":
        kwargs.update(normalized_shape=(1, 2, 3, 4), weight=None, bias=None)
    elif case == "empty_normalized_shape":
        kwargs["normalized_shape"] = ()
    elif case == "int_normalized_shape":
        kwargs.update(normalized_shape=4, weight=None, bias=None)
    elif case == "float_in_normalized_shape":
        kwargs["normalized_shape"] = (3, 4.0)
    elif case == "bool_in_normalized_shape":
        kwargs.update(normalized_shape=(True,), weight=None, bias=None)
    elif case == "none_normalized_shape":
        kwargs["normalized_shape"] = None
    elif case == "eps_none":
        kwargs["eps"] = None
    elif case == "eps_str":
        kwargs["eps"] = "1e-5"
    elif case == "weight_shape":
        kwargs["weight"] = torch.ones(12)
    elif case == "bias_shape":
        kwargs["bias"] = torch.zeros(4, 3)
    elif case == "integer_input":
        kwargs.update(input=x.long(), weight=None, bias=None)
    elif case == "integer_input_float_weight":
        kwargs["input"] = x.long()
    elif case == "integer_weight":
        kwargs["weight"] = torch.ones(3, 4, dtype=torch.int32)
    elif case == "weight_dtype":
        kwargs["weight"] = torch.ones(3, 4, dtype=torch.float64)
    elif case == "bias_dtype_differs_from_weight":
        kwargs.update(input=x.bfloat16(), bias=torch.zeros(3, 4, dtype=torch.bfloat16))
    elif case == "input_not_tensor":
        kwargs["input"] = np.ones((2, 3, 4))
    elif case == "weight_not_tensor":
        kwargs["weight"] = np.ones((3, 4))
    # The exception type is torch's for the same call.
    with pytest.raises(error):
        F.layer_norm(**kwargs)
    with pytest.raises(error, match=match) as raised:
        layer_norm(**kwargs)
    assert type(raised.value) is error


@pytest.mark.parametrize("kwargs", [
    dict(normalized_shape=(np.int64(3), 4)), dict(normalized_shape=torch.Size([4])), dict(eps=-0.5),
    dict(eps=0), dict(eps=np.float32(0.1)), dict(eps=torch.tensor(0.1)),
], ids=["numpy_ints", "size", "negative_eps", "int_eps", "numpy_eps", "tensor_eps"])
def test_arguments_torch_accepts_are_accepted(kwargs):
    x = make_input((2, 3, 4))
    call = dict(normalized_shape=(3, 4), eps=1e-5)
    call.update(kwargs)
    w, b = make_params(tuple(int(n) for n in call["normalized_shape"]))
    assert_matches(layer_norm, {"torch": F.layer_norm}, x, call["normalized_shape"], w, b, eps=call["eps"])


@pytest.mark.parametrize("view", ["strided", "expanded"])
def test_strided_and_expanded_parameters(device, view):
    x = make_input((3, 2, 5), device)
    if view == "strided":
        base = torch.randn(2, 10, device=device, requires_grad=True)
        w, b = base[0, ::2], base[1, 1::2]
    else:
        base = torch.randn(2, device=device, requires_grad=True)
        w, b = base[0].expand(5), base[1].expand(5)
    ours, theirs = layer_norm(x, (5,), w, b), F.layer_norm(x, (5,), w, b)
    assert_close(ours, theirs)
    g = torch.randn_like(ours)
    for name, a, e in zip(("x", "weight and bias base"), torch.autograd.grad(ours, (x, base), g),
                          torch.autograd.grad(theirs, (x, base), g)):
        assert_close(a, e, name=f"gradient of {name}")


def test_module_with_non_contiguous_parameters(device):
    theirs, ours = torch.nn.LayerNorm(4).to(device), LayerNorm(4).to(device)
    for module in (ours, theirs):
        module.weight = torch.nn.Parameter(torch.linspace(0.5, 2.0, 8, device=device)[::2])
        module.bias = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12, device=device)[::3])
    x = make_input((3, 4), device).detach()
    y_ours, y_theirs = ours(x), theirs(x)
    assert_close(y_ours, y_theirs)
    y_ours.pow(2).sum().backward()
    y_theirs.pow(2).sum().backward()
    assert_close(ours.weight.grad, theirs.weight.grad, name="weight grad")
    assert_close(ours.bias.grad, theirs.bias.grad, name="bias grad")


# ------------------------------------------------------------------------------------------------
# The numpy reference with the hand-derived backward, and the doc that derives it
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,normalized_shape", [((7, 5), (5,)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4))])
def test_numpy_reference_matches_autograd(shape, normalized_shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(normalized_shape, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(normalized_shape, dtype=torch.float64, requires_grad=True)
    y = F.layer_norm(x, normalized_shape, w, b)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_np, cache = layernorm_numpy.layer_norm_forward(x.detach().numpy(), w.detach().numpy(), b.detach().numpy())
    dx, dw, db = layernorm_numpy.layer_norm_backward(dy.numpy(), cache)
    for name, ours, expected in (("y", y_np, y), ("dx", dx, x.grad), ("dweight", dw, w.grad), ("dbias", db, b.grad)):
        assert_close(torch.from_numpy(np.ascontiguousarray(ours)), expected.detach(), name=name)


def test_doc_points_at_every_backward_term():
    # tests/test_docs.py checks that each pointer still holds its code; this checks the doc ties
    # every term of the derivation to the kernel.
    doc = (Path(__file__).resolve().parents[1] / "docs" / "layernorm.md").read_text()
    pointed = set(re.findall(r"`kernels/layernorm\.py:\d+` — `([^`]+)`", doc))
    for term in ("sum_wdy += tl.sum(wdy, axis=1)", "sum_wdy_xhat += tl.sum(wdy * xhat, axis=1)",
                 "sum_dy_xhat += tl.sum(dy * xhat, axis=0)", "sum_dy += tl.sum(dy, axis=0)",
                 "rstd = 1.0 / tl.sqrt(m2 / N + eps)"):
        assert term in pointed, f"docs/layernorm.md does not point at `{term}`"
