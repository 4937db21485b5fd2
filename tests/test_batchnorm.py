"""BatchNorm: gradcheck, parity with the reference and with torch, running stats, layouts, errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import PARITY_DTYPES, assert_close, assert_gradcheck, assert_matches, record_copy_calls
from tritonprop import ops
from tritonprop.kernels import batchnorm as K
from tritonprop.ops.reference import batchnorm as reference
from tritonprop.ops.reference import batchnorm_numpy

# (shape, channels_last): 2-D, 3-D, NCHW, channels_last, 5-D, odd and prime sizes.
SHAPES = [
    ((5, 3), False),
    ((3, 4, 7), False),
    ((2, 3, 5, 7), False),
    ((2, 3, 5, 7), True),
    ((2, 2, 3, 1, 5), False),
]
SHAPE_IDS = ["N,C", "N,C,L", "NCHW", "channels_last", "N,C,D,H,W"]


def make_input(shape, channels_last=False, device="cpu", dtype=torch.float32, shift=0.5, scale=2.0):
    x = torch.randn(shape, device=device, dtype=torch.float32) * scale + shift
    x = x.to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    return x.requires_grad_()


def make_params(C, device="cpu", dtype=torch.float32):
    weight = (torch.rand(C, device=device) + 0.5).to(dtype).requires_grad_()
    bias = torch.randn(C, device=device).to(dtype).requires_grad_()
    running_mean = torch.randn(C, device=device).to(dtype)
    running_var = (torch.rand(C, device=device) + 0.5).to(dtype)
    return running_mean, running_var, weight, bias


def torch_bn_relu(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                  eps=1e-5, *, fuse_relu=False):
    y = F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return torch.relu(y) if fuse_relu else y


# ------------------------------------------------------------------------------------------------
# gradcheck (float64)
# ------------------------------------------------------------------------------------------------


# Under the interpreter a full Jacobian costs two forwards per input element and one backward
# per output element, so the grid uses gradcheck's fast mode (random projections u, v of the
# Jacobian, checked as v^T J u); small shapes get the full Jacobian below, and the whole grid
# gets it under -m slow.
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,channels_last", SHAPES, ids=SHAPE_IDS)
def test_gradcheck_input_weight_bias(device, shape, channels_last, training):
    x = make_input(shape, channels_last, device)
    rm, rv, w, b = make_params(shape[1], device)
    assert_gradcheck(ops.batch_norm, x, rm, rv, w, b, training=training, fast_mode=True)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,channels_last", [((5, 2), False), ((2, 2, 2, 3), True)], ids=["N,C", "channels_last"])
def test_gradcheck_full_jacobian_small(device, shape, channels_last, training):
    x = make_input(shape, channels_last, device)
    rm, rv, w, b = make_params(shape[1], device)
    assert_gradcheck(ops.batch_norm, x, rm, rv, w, b, training=training)


@pytest.mark.slow
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,channels_last", SHAPES, ids=SHAPE_IDS)
def test_gradcheck_full_jacobian_grid(device, shape, channels_last, training):
    x = make_input(shape, channels_last, device)
    rm, rv, w, b = make_params(shape[1], device)
    assert_gradcheck(ops.batch_norm, x, rm, rv, w, b, training=training)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck_fused_relu_and_no_affine(device, training):
    # Shift the input so the ReLU cuts through it; gradcheck's finite differences stay away
    # from the kink because no pre-activation lands within eps of 0 for this seed.
    x = make_input((3, 2, 3, 4), device=device, shift=0.3)
    rm, rv, w, b = make_params(2, device)
    assert_gradcheck(ops.batch_norm, x, rm, rv, w, b, training=training, fuse_relu=True, fast_mode=True)
    assert_gradcheck(ops.batch_norm, x, rm, rv, None, None, training=training, fast_mode=True)
    assert_gradcheck(ops.batch_norm, x, None, None, w, None, training=True, fast_mode=True)


# ------------------------------------------------------------------------------------------------
# Parity with the naive reference and with torch
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,channels_last", SHAPES, ids=SHAPE_IDS)
def test_matches_reference_and_torch(device, shape, channels_last, training, dtype):
    x = make_input(shape, channels_last, device, dtype)
    rm, rv, w, b = make_params(shape[1], device, dtype)
    out = assert_matches(ops.batch_norm, {"reference": reference.batch_norm, "torch": F.batch_norm},
                         x, rm, rv, w, b, training=training, momentum=0.2, eps=1e-3)
    assert out.dtype == dtype


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,channels_last", SHAPES, ids=SHAPE_IDS)
def test_compiled_tile_plans_match_torch(device, shape, channels_last, training, compiled_plans):
    x = make_input(shape, channels_last, device, torch.float32)
    rm, rv, w, b = make_params(shape[1], device, torch.float32)
    # The GPU's plan indeed: at most 4,096 elements per tile, where the interpreter's takes 65,536.
    assert K.plan_tiles(64, 4096, 256, 1, 4096) == (1, 4096, 1)
    assert_matches(ops.batch_norm, {"torch": F.batch_norm}, x, rm, rv, w, b, training=training, momentum=0.2,
                   eps=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_input_with_float32_parameters(device, dtype):
    # What autocast produces: half activations, float32 parameters and running stats. Gradients
    # of the float32 parameters are float32 sums, as cuDNN computes them; torch's CPU kernel
    # rounds them through the input dtype, so the torch oracle here runs torch in float32 math.
    x = make_input((4, 3, 5, 5), True, device, dtype)
    rm, rv, w, b = make_params(3, device, torch.float32)

    def torch_in_float32(input, *args, **kwargs):
        return F.batch_norm(input.float(), *args, **kwargs).to(input.dtype)

    out = assert_matches(ops.batch_norm, {"reference": reference.batch_norm, "torch": torch_in_float32},
                         x, rm, rv, w, b, training=True)
    assert out.dtype == dtype


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_relu_matches_batch_norm_then_relu(device, training):
    x = make_input((4, 3, 6, 5), device=device)
    rm, rv, w, b = make_params(3, device)
    out = assert_matches(ops.batch_norm, {"reference": reference.batch_norm, "torch": torch_bn_relu},
                         x, rm, rv, w, b, training=training, fuse_relu=True)
    assert (out == 0).any() and (out > 0).any()


@pytest.mark.parametrize("tiles,chunks", [(None, None), ((1, 4, 1), 3)], ids=["planned", "many_partials"])
def test_statistics_stay_accurate_when_mean_dominates(device, tiles, chunks):
    # With mean/std = 1000, E[x^2] - E[x]^2 in fp32 loses most digits of the variance;
    # Chan's pairwise update keeps it to fp32 accuracy. The truth is fp64 on the same fp32 values.
    x = torch.randn(8, 2, 9, 9, device=device) + 1000.0
    running_mean, running_var = torch.zeros(2, device=device), torch.ones(2, device=device)
    _, mean, invstd = K.forward(x, None, None, running_mean, running_var, True, 1.0, 0.0, tiles=tiles, chunks=chunks)
    x64 = x.double()
    assert_close(mean.double(), x64.mean(dim=(0, 2, 3)).to(torch.float64), name="mean", dtype=torch.float32)
    var = invstd.double().pow(-2)
    assert_close(var, x64.var(dim=(0, 2, 3), unbiased=False), name="biased variance", dtype=torch.float32)
    assert_close(running_var.double(), x64.var(dim=(0, 2, 3), unbiased=True), name="running_var",
                 dtype=torch.float32)


@pytest.mark.parametrize("tiles,chunks", [((1, 2, 1), 3), ((2, 4, 2), 2), ((1, 1, 4), 5)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels_last"])
def test_many_partials_merge_exactly(device, tiles, chunks, channels_last):
    # Tiny tiles force the split reduction to produce many partials per channel, so the
    # merge paths (Chan's update, the fixed-order sums) are exercised on small inputs.
    x = make_input((3, 5, 4, 3), channels_last, device, shift=3.0).detach()
    rm, rv, w, b = make_params(5, device)
    rm_t, rv_t = rm.clone(), rv.clone()
    y, mean, invstd = K.forward(x, w.detach(), b.detach(), rm, rv, True, 0.1, 1e-5, tiles=tiles, chunks=chunks)
    expected = F.batch_norm(x, rm_t, rv_t, w.detach(), b.detach(), True, 0.1, 1e-5)
    assert_close(y, expected)
    assert_close(rm, rm_t, name="running_mean")
    assert_close(rv, rv_t, name="running_var")

    dy = torch.randn_like(x)
    dx, dw, db = K.backward(dy, x, w.detach(), b.detach(), mean, invstd, True, tiles=tiles, chunks=chunks)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    F.batch_norm(xr, None, None, wr, br, True).backward(dy)
    assert_close(dx, xr.grad, name="dx")
    assert_close(dw, wr.grad, name="dweight")
    assert_close(db, br.grad, name="dbias")


def test_deterministic(device):
    x = make_input((6, 4, 7, 5), True, device)
    _, _, w, b = make_params(4, device)
    results = []
    for _ in range(2):
        xi, wi, bi = (t.detach().clone().requires_grad_() for t in (x, w, b))
        y = ops.batch_norm(xi, None, None, wi, bi, training=True)
        y.backward(torch.ones_like(y) * torch.arange(y.numel(), device=device).reshape(y.shape).sin())
        results.append([y, xi.grad, wi.grad, bi.grad])
    for a, e in zip(*results):
        assert torch.equal(a, e)


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["NCHW", "NHWC"])
def test_output_layout_follows_input_like_torch(device, memory_format):
    x = torch.randn(2, 3, 4, 5, device=device).to(memory_format=memory_format)
    y = ops.batch_norm(x, None, None, training=True)
    assert y.stride() == F.batch_norm(x, None, None, training=True).stride()


def test_channels_last_is_not_copied(device, monkeypatch):
    # The kernels read channels_last in place: no .contiguous() is taken on the way.
    x = make_input((2, 3, 4, 5), True, device).detach()
    calls = record_copy_calls(monkeypatch)
    ops.batch_norm(x, None, None, training=True)
    assert [s for s in calls if len(s) == 4] == []


@pytest.mark.parametrize("view", ["slice_w_step", "slice_h", "transposed_hw", "slice_batch", "slice_3d_w"])
def test_non_contiguous_views(device, view):
    base = torch.randn(4, 3, 6, 10, 3, device=device) if view == "slice_3d_w" else torch.randn(4, 3, 6, 10, device=device)
    x = {
        "slice_w_step": lambda t: t[..., ::2],
        "slice_h": lambda t: t[:, :, 1:5],
        "transposed_hw": lambda t: t.transpose(2, 3),
        "slice_batch": lambda t: t[::2],
        "slice_3d_w": lambda t: t[..., ::2, :],
    }[view](base)
    assert not x.is_contiguous()
    rm, rv, w, b = make_params(3, device)
    assert_matches(ops.batch_norm, {"torch": F.batch_norm}, x.requires_grad_(), rm, rv, w, b, training=True)


def test_expanded_and_transposed_upstream_gradients(device):
    x = make_input((3, 2, 4, 5), True, device)
    rm, rv, w, b = make_params(2, device)
    xr = x.detach().clone().requires_grad_()
    # .sum() hands the backward an expanded (all-stride-0) gradient.
    ops.batch_norm(x, None, None, w, b, training=True).sum().backward()
    F.batch_norm(xr, None, None, w.detach(), b.detach(), training=True).sum().backward()
    assert_close(x.grad, xr.grad, name="dx from an expanded dy")
    x.grad = xr.grad = None
    g = torch.randn(3, 2, 5, 4, device=device).transpose(2, 3)
    ops.batch_norm(x, None, None, training=True).backward(g)
    F.batch_norm(xr, None, None, training=True).backward(g)
    assert_close(x.grad, xr.grad, name="dx from a transposed dy")


def test_non_contiguous_running_stats_are_updated_in_place(device):
    x = torch.randn(4, 3, 5, device=device)
    stats = torch.zeros(3, 2, device=device)
    stats[:, 1] = 1.0
    expected = stats.clone()
    ops.batch_norm(x, stats[:, 0], stats[:, 1], training=True)
    F.batch_norm(x, expected[:, 0], expected[:, 1], training=True)
    assert_close(stats, expected, name="strided running stats")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_strided_parameters_and_running_stats_are_read_and_written_in_place(device, training):
    x = make_input((4, 3, 5), device=device)
    params = torch.randn(4, 3, device=device)
    params[3] = params[3].abs() + 0.5
    expected = params.clone()
    # Columns of a (4, 3) tensor: each a stride-3 view. weight and bias require grad through their base.
    base = torch.randn(2, 6, device=device, requires_grad=True)
    ours = ops.batch_norm(x, params[2], params[3], base[0, ::2], base[1, 1::2], training=training)
    theirs = F.batch_norm(x, expected[2], expected[3], base[0, ::2], base[1, 1::2], training=training)
    assert_close(ours, theirs)
    assert_close(params, expected, name="strided running stats after the call")
    g = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, (x, base), g)
    expected_grads = torch.autograd.grad(theirs, (x, base), g)
    for name, a, e in zip(("x", "weight and bias base"), grads, expected_grads):
        assert_close(a, e, name=f"gradient of {name}")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_expanded_parameters_are_read_by_stride(device, training):
    x = make_input((4, 3, 5), device=device)
    scale = torch.tensor(1.5, device=device, requires_grad=True)
    shift = torch.tensor(-0.25, device=device, requires_grad=True)
    # Expanded running stats can be read (eval); training writes them, which the next test covers.
    running = (torch.tensor(0.3, device=device).expand(3), torch.tensor(2.0, device=device).expand(3))
    if training:
        running = (None, None)
    ours = ops.batch_norm(x, *running, scale.expand(3), shift.expand(3), training=training)
    theirs = F.batch_norm(x, *running, scale.expand(3), shift.expand(3), training=training)
    assert_close(ours, theirs)
    g = torch.randn_like(ours)
    for name, a, e in zip(("x", "weight", "bias"), torch.autograd.grad(ours, (x, scale, shift), g),
                          torch.autograd.grad(theirs, (x, scale, shift), g)):
        assert_close(a, e, name=f"gradient of {name}")


def test_expanded_running_stats_are_refused_in_training():
    # torch writes all channels' updates into the one shared element, leaving whichever landed last:
    # no running statistic. Refused before anything is written.
    running_mean, running_var = torch.zeros(1).expand(3), torch.ones(1).expand(3)
    with pytest.raises(RuntimeError, match="running_mean .* more than one element in a single memory location"):
        ops.batch_norm(torch.randn(4, 3, 5), running_mean, running_var, training=True)
    assert running_mean[0] == 0 and running_var[0] == 1


def test_module_with_non_contiguous_parameters_and_buffers(device):
    theirs = torch.nn.BatchNorm1d(3).to(device)
    ours = ops.BatchNorm1d(3).to(device)
    for module in (theirs, ours):
        module.weight = torch.nn.Parameter(torch.linspace(0.5, 2.0, 6, device=device)[::2])
        module.bias = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 9, device=device)[::3])
        module.running_mean = torch.zeros(6, device=device)[1::2]
        module.running_var = torch.ones(6, device=device)[::2]
    x = make_input((5, 3, 4), device=device).detach()
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        assert_close(ours(x), theirs(x))
        assert_close(ours.running_mean, theirs.running_mean, name="running_mean")
        assert_close(ours.running_var, theirs.running_var, name="running_var")
    ours(x).sum().backward()
    theirs(x).sum().backward()
    assert_close(ours.weight.grad, theirs.weight.grad, name="weight grad")
    assert_close(ours.bias.grad, theirs.bias.grad, name="bias grad")


# ------------------------------------------------------------------------------------------------
# Modules: running statistics, state_dict, train/eval
# ------------------------------------------------------------------------------------------------


def _train_steps(module, inputs):
    outs = []
    for x in inputs:
        x = x.detach().clone().requires_grad_()
        y = module(x)
        y.backward(torch.cos(y.detach()))
        outs.append((y.detach(), x.grad))
    return outs


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("cls,shape", [
    ("BatchNorm1d", (6, 4)), ("BatchNorm1d", (3, 4, 5)), ("BatchNorm2d", (3, 4, 3, 5)), ("BatchNorm3d", (2, 4, 2, 3, 2)),
])
def test_module_matches_torch_over_several_steps(device, cls, shape, momentum):
    theirs = getattr(torch.nn, cls)(4, momentum=momentum).to(device)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.normal_()
    ours = getattr(ops, cls)(4, momentum=momentum).to(device)
    ours.load_state_dict(theirs.state_dict())
    inputs = [torch.randn(shape, device=device) * (k + 1) + k for k in range(4)]

    for (y, dx), (ye, dxe) in zip(_train_steps(ours, inputs), _train_steps(theirs, inputs)):
        assert_close(y, ye)
        assert_close(dx, dxe, name="dx")
    assert_close(ours.weight.grad, theirs.weight.grad, name="weight.grad")
    assert_close(ours.bias.grad, theirs.bias.grad, name="bias.grad")
    assert_close(ours.running_mean, theirs.running_mean, name="running_mean")
    assert_close(ours.running_var, theirs.running_var, name="running_var")
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 4

    ours.eval()
    theirs.eval()
    for (y, dx), (ye, dxe) in zip(_train_steps(ours, inputs[:1]), _train_steps(theirs, inputs[:1])):
        assert_close(y, ye, name="eval output")
        assert_close(dx, dxe, name="eval dx")
    assert ours.num_batches_tracked.item() == 4


@pytest.mark.parametrize("affine,track", [(False, True), (True, False), (False, False)])
def test_module_without_affine_or_tracking(device, affine, track):
    theirs = torch.nn.BatchNorm2d(3, affine=affine, track_running_stats=track).to(device)
    ours = ops.BatchNorm2d(3, affine=affine, track_running_stats=track).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 4, 4, device=device) + 1.0
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        assert_close(ours(x), theirs(x), name=f"{mode} output")
    if track:
        assert_close(ours.running_var, theirs.running_var, name="running_var")


def test_state_dict_round_trip_and_subclassing():
    theirs = torch.nn.BatchNorm2d(5)
    theirs.running_mean.normal_()
    ours = ops.BatchNorm2d(5, fuse_relu=True)
    assert isinstance(ours, torch.nn.BatchNorm2d)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert torch.equal(ours.running_mean, theirs.running_mean)
    back = torch.nn.BatchNorm2d(5)
    back.load_state_dict(ours.state_dict())
    assert torch.equal(back.running_mean, theirs.running_mean)
    assert "fuse_relu=True" in repr(ours)


def test_module_fuse_relu_keyword(device):
    ours = ops.BatchNorm2d(3, fuse_relu=True).to(device)
    theirs = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.ReLU()).to(device)
    x = torch.randn(2, 3, 4, 4, device=device)
    assert_close(ours(x), theirs(x))


def test_deepcopy_and_device_move_keep_fuse_relu():
    ours = ops.BatchNorm1d(3, fuse_relu=True)
    assert copy.deepcopy(ours).fuse_relu


def test_autocast_casting_matches_torch(device):
    # batch_norm is in none of autocast's cast lists: it runs in its input's dtype, as torch's does.
    conv_dtype = torch.bfloat16
    x = torch.randn(2, 3, 4, 4, device=device)
    ours, theirs = ops.BatchNorm2d(3).to(device), torch.nn.BatchNorm2d(3).to(device)
    with torch.autocast(device.type, dtype=conv_dtype):
        for inp in (x, x.to(conv_dtype)):
            y, ye = ours(inp), theirs(inp)
            assert y.dtype == ye.dtype
            assert_close(y, ye)
    assert_close(ours.running_mean, theirs.running_mean, name="running_mean")


# ------------------------------------------------------------------------------------------------
# Edge cases and errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_empty_batch(device, training):
    x = torch.randn(0, 3, 4, 4, device=device, requires_grad=True)
    rm, rv, w, b = make_params(3, device)
    rm_before, rv_before = rm.clone(), rv.clone()
    y = ops.batch_norm(x, rm, rv, w, b, training=training)
    expected = F.batch_norm(x.detach(), rm_before.clone(), rv_before.clone(), w.detach(), b.detach(), training=training)
    assert y.shape == expected.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    assert torch.equal(rm, rm_before) and torch.equal(rv, rv_before)


def test_eval_with_one_value_per_channel_works(device):
    x = torch.randn(1, 3, device=device)
    rm, rv, w, b = make_params(3, device)
    assert_close(ops.batch_norm(x, rm, rv, w, b, training=False), F.batch_norm(x, rm, rv, w, b, training=False))


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_training_with_one_value_per_channel_raises_like_torch(shape):
    x = torch.randn(shape)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(x, None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        ops.batch_norm(x, None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        ops.BatchNorm1d(3)(torch.randn(1, 3))


@pytest.mark.parametrize("case,error,names", [
    ("weight_size", RuntimeError, "weight should contain 3"),
    ("bias_size", RuntimeError, "bias should contain 3"),
    ("running_mean_size", RuntimeError, "running_mean should contain 3"),
    ("running_var_size", RuntimeError, "running_var should contain 3"),
    ("running_mean_2d", RuntimeError, "running_mean must be 1-dimensional"),
    ("integer_input", NotImplementedError, "input of dtype torch.int64 is not supported"),
    ("integer_weight", RuntimeError, "weight must be a floating-point tensor"),
    ("weight_dtype", RuntimeError, "weight has dtype torch.float64"),
    ("running_var_dtype", RuntimeError, "running_var has dtype torch.float64"),
    ("one_dim_input", IndexError, "input must have at least 2 dims"),
    ("one_dim_input_with_running_stats", RuntimeError, "running_mean should contain 0 elements"),
    ("eval_without_running_stats", RuntimeError, "running_mean must be defined in evaluation mode"),
    ("only_running_mean", ValueError, "running_mean and running_var must both"),
    ("running_mean_requires_grad", RuntimeError, "not differentiable with respect to running_mean"),
    ("momentum_none", TypeError, "momentum must be a float"),
    ("momentum_str", TypeError, "momentum must be a float"),
    ("eps_none", TypeError, "eps must be a float"),
    ("eps_zero_training", ValueError, "eps must be positive during training"),
    ("eps_negative_training", ValueError, "eps must be positive during training"),
    ("eps_negative_eval", ValueError, "eps must be non-negative"),
    ("training_none", TypeError, "training must be bool"),
    ("training_int", TypeError, "training must be bool"),
    ("input_not_tensor", TypeError, "input must be a torch.Tensor"),
    ("weight_not_tensor", TypeError, "weight must be a torch.Tensor"),
])
def test_bad_arguments_name_the_argument(case, error, names):
    x = torch.randn(4, 3, 5)
    rm, rv, w, b = make_params(3)
    kwargs = dict(input=x, running_mean=rm, running_var=rv, weight=w, bias=b, training=True)
    if case == "weight_size":
        kwargs["weight"] = torch.ones(4)
    elif case == "bias_size":
        kwargs["bias"] = torch.ones(2)
    elif case == "running_mean_size":
        kwargs["running_mean"] = torch.zeros(5)
    elif case == "running_var_size":
        kwargs["running_var"] = torch.ones(1)
    elif case == "running_mean_2d":
        kwargs.update(running_mean=torch.zeros(3, 1), running_var=torch.ones(3, 1))
    elif case == "integer_input":
        kwargs["input"] = torch.ones(4, 3, 5, dtype=torch.int64)
    elif case == "integer_weight":
        kwargs["weight"] = torch.ones(3, dtype=torch.int32)
    elif case == "weight_dtype":
        kwargs["weight"] = torch.ones(3, dtype=torch.float64)
    elif case == "running_var_dtype":
        kwargs["running_var"] = torch.ones(3, dtype=torch.float64)
    elif case == "one_dim_input":
        kwargs.update(input=torch.randn(3), running_mean=None, running_var=None, weight=None, bias=None)
    elif case == "one_dim_input_with_running_stats":
        kwargs.update(input=torch.randn(3), weight=None, bias=None)
    elif case == "eval_without_running_stats":
        kwargs.update(training=False, running_mean=None, running_var=None)
    elif case == "only_running_mean":
        kwargs["running_var"] = None
    elif case == "running_mean_requires_grad":
        kwargs.update(training=False, running_mean=rm.requires_grad_())
    elif case == "momentum_none":
        kwargs["momentum"] = None
    elif case == "momentum_str":
        kwargs["momentum"] = "0.1"
    elif case == "eps_none":
        kwargs["eps"] = None
    elif case == "eps_zero_training":
        kwargs["eps"] = 0.0
    elif case == "eps_negative_training":
        kwargs["eps"] = -1e-5
    elif case == "eps_negative_eval":
        kwargs.update(training=False, eps=-1e-5)
    elif case == "training_none":
        kwargs["training"] = None
    elif case == "training_int":
        kwargs["training"] = 1
    elif case == "input_not_tensor":
        kwargs["input"] = np.ones((4, 3))
    elif case == "weight_not_tensor":
        kwargs["weight"] = [1.0, 1.0, 1.0]
    # The exception type is torch's for the same call.
    with pytest.raises(error):
        F.batch_norm(**copy.deepcopy(kwargs))
    with pytest.raises(error, match=names) as raised:
        ops.batch_norm(**kwargs)
    assert type(raised.value) is error


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_values_torch_accepts_are_accepted(training):
    # eps=0 in eval, a negative or NaN momentum, and real numbers of other types, as torch takes them.
    x = torch.randn(4, 3, 5)
    for kwargs in (dict(eps=0.0) if not training else dict(eps=1), dict(momentum=-1.2), dict(momentum=float("nan")),
                   dict(momentum=np.float64(0.3), eps=torch.tensor(0.5)), dict(momentum=True)):
        rm, rv, w, b = make_params(3)
        assert_matches(ops.batch_norm, {"torch": F.batch_norm}, x, rm, rv, w, b, training=training, grad=False,
                       **kwargs)


# torch's OpInfo samples for batch_norm include an empty 1-D input with 0-element running stats.
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,channels", [((0,), 0), ((0, 3), 3), ((0, 3, 4), 3), ((2, 3, 0), 3)])
def test_empty_inputs_match_torch(device, training, shape, channels):
    x = torch.randn(shape, device=device, requires_grad=True)
    running_mean = torch.randn(channels, device=device)
    running_var = torch.rand(channels, device=device) + 0.5
    out = assert_matches(ops.batch_norm, {"torch": F.batch_norm}, x, running_mean, running_var, training=training)
    assert out.shape == shape
    if channels:
        _, _, w, b = make_params(channels, device)
        assert_matches(ops.batch_norm, {"torch": F.batch_norm}, x, running_mean, running_var, w, b,
                       training=training)


@pytest.mark.parametrize("cls,shape", [
    ("BatchNorm1d", (2, 3, 4, 4)), ("BatchNorm1d", (3,)), ("BatchNorm2d", (2, 3, 4)), ("BatchNorm3d", (2, 3, 4, 4)),
])
def test_module_checks_input_dims_like_torch(cls, shape):
    expected_dims = {"BatchNorm1d": "2D or 3D", "BatchNorm2d": "4D", "BatchNorm3d": "5D"}[cls]
    with pytest.raises(ValueError, match=f"expected {expected_dims} input"):
        getattr(torch.nn, cls)(3)(torch.randn(shape))
    with pytest.raises(ValueError, match=f"expected {expected_dims} input"):
        getattr(ops, cls)(3)(torch.randn(shape))


def test_module_with_a_bad_momentum_raises_what_torch_raises():
    # torch's constructor stores any momentum; the forward refuses a non-number.
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(TypeError):
        torch.nn.BatchNorm2d(3, momentum="0.1")(x)
    with pytest.raises(TypeError, match="momentum must be a float"):
        ops.BatchNorm2d(3, momentum="0.1")(x)


def test_module_with_eps_zero_raises_in_training_and_works_in_eval():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="eps must be positive during training"):
        ops.BatchNorm2d(3, eps=0.0)(x)
    ours, theirs = ops.BatchNorm2d(3, eps=0.0).eval(), torch.nn.BatchNorm2d(3, eps=0.0).eval()
    assert_close(ours(x), theirs(x))


# ------------------------------------------------------------------------------------------------
# The numpy reference with the hand-derived backward
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(7, 3), (4, 3, 5), (2, 3, 4, 5)])
def test_numpy_reference_matches_autograd(shape, training):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    rm, rv, w, b = (t.detach().double() for t in make_params(shape[1]))
    w.requires_grad_()
    b.requires_grad_()
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.0)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_np, cache = batchnorm_numpy.batch_norm_forward(x.detach().numpy(), w.detach().numpy(), b.detach().numpy(),
                                                     1e-5, rm.numpy(), rv.numpy(), training)
    dx, dw, db = batchnorm_numpy.batch_norm_backward(dy.numpy(), cache)
    for name, ours, expected in (("y", y_np, y), ("dx", dx, x.grad), ("dweight", dw, w.grad), ("dbias", db, b.grad)):
        assert_close(torch.from_numpy(np.ascontiguousarray(ours)), expected.detach(), name=name)
