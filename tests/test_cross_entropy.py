"""cross_entropy, log_softmax, nll_loss: gradcheck, parity with the reference and torch, layouts, errors, modules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import (PARITY_DTYPES, assert_close, assert_gradcheck, assert_gradgradcheck,
                     assert_gradient_penalty_matches, assert_matches, record_copy_calls)
from tritonprop import backend
from tritonprop.kernels import cross_entropy as K
from tritonprop.ops.cross_entropy import (
    CrossEntropyLoss,
    LogSoftmax,
    NLLLoss,
    cross_entropy,
    log_softmax,
    nll_loss,
)
from tritonprop.ops.reference import cross_entropy as reference
from tritonprop.ops.reference import cross_entropy_numpy

LOW_PRECISION = (torch.float16, torch.bfloat16)
REDUCTIONS = ["mean", "sum", "none"]

# (logits shape, largest column block): C = 1, 7 and 130, (N, C) and (N, C, d1, d2). The column
# block is lowered so that every row with C > 1 takes several passes of the online log-sum-exp
# loop (test_small_column_blocks_split_the_rows checks that they do).
SHAPES = [((5, 1), 4), ((4, 7), 4), ((3, 130), 32), ((2, 7, 3, 2), 4)]
SHAPE_IDS = ["C=1", "C=7", "C=130", "N,C,d1,d2"]


def make_logits(shape, device="cpu", dtype=torch.float32, scale=2.0):
    return (torch.randn(shape, device=device) * scale).to(dtype).requires_grad_()


def make_target(shape, device="cpu", ignore_index=None, every=3):
    """Class indices for logits of `shape`; every `every`-th one is ignore_index when given."""
    classes = shape[0] if len(shape) == 1 else shape[1]
    target = torch.randint(0, classes, (shape[0], *shape[2:]) if len(shape) > 1 else (), device=device)
    if ignore_index is not None:
        target.view(-1)[::every] = ignore_index
    return target


def make_weight(classes, device="cpu", dtype=torch.float32):
    return (torch.rand(classes, device=device) + 0.25).to(dtype)


def bound(fn, target):
    """`fn` with the target bound: assert_matches compares every tensor argument after the call
    with the float tolerances, which an integer target has none of."""
    return lambda input, *args, **kwargs: fn(input, target, *args, **kwargs)


def in_float32(fn):
    """torch's op computed in float32 and cast back: the oracle for fp16/bf16 (our kernels also
    accumulate in float32, while torch's CPU kernels round log-probabilities to the input dtype)."""
    def run(input, target, weight=None, *args, **kwargs):
        if input.dtype not in LOW_PRECISION:
            return fn(input, target, weight, *args, **kwargs)
        weight = weight.float() if weight is not None else None
        return fn(input.float(), target, weight, *args, **kwargs).to(input.dtype)
    return run


def log_softmax_in_float32(input, dim):
    if input.dtype not in LOW_PRECISION:
        return F.log_softmax(input, dim)
    return F.log_softmax(input.float(), dim).to(input.dtype)


# ------------------------------------------------------------------------------------------------
# gradcheck (float64)
# ------------------------------------------------------------------------------------------------

CE_GRADCHECK_OPTIONS = [
    dict(reduction="mean"),
    dict(reduction="sum", weighted=True, label_smoothing=0.2, ignore_index=-100),
    dict(reduction="none", weighted=True, label_smoothing=0.1, ignore_index=0),
]
CE_GRADCHECK_IDS = ["mean", "sum+weight+smoothing+ignore", "none+weight+smoothing+ignore0"]


def _gradcheck_case(shape, device, options):
    options = dict(options)
    weighted = options.pop("weighted", False)
    x = make_logits(shape, device, torch.float64)
    target = make_target(shape, device, options.get("ignore_index"))
    weight = make_weight(shape[1], device, torch.float64) if weighted else None
    return x, target, weight, options


@pytest.mark.parametrize("options", CE_GRADCHECK_OPTIONS, ids=CE_GRADCHECK_IDS)
@pytest.mark.parametrize("shape,block", SHAPES, ids=SHAPE_IDS)
def test_gradcheck_cross_entropy(device, monkeypatch, shape, block, options):
    monkeypatch.setattr(K, "MAX_BLOCK_C", block)
    x, target, weight, options = _gradcheck_case(shape, device, options)
    assert_gradcheck(cross_entropy, x, target, weight, fast_mode=True, **options)


@pytest.mark.parametrize("shape,block", SHAPES, ids=SHAPE_IDS)
def test_gradcheck_log_softmax(device, monkeypatch, shape, block):
    monkeypatch.setattr(K, "MAX_BLOCK_C", block)
    x = make_logits(shape, device, torch.float64)
    assert_gradcheck(log_softmax, x, 1, fast_mode=True)
    assert_gradcheck(log_softmax, x, 0, fast_mode=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,block", SHAPES[1:], ids=SHAPE_IDS[1:])
def test_gradcheck_nll_loss(device, monkeypatch, shape, block, reduction):
    monkeypatch.setattr(K, "MAX_BLOCK_C", block)
    x = make_logits(shape, device, torch.float64)
    target = make_target(shape, device, ignore_index=-100)
    assert_gradcheck(nll_loss, x, target, make_weight(shape[1], device, torch.float64), reduction=reduction,
                     fast_mode=True)


def test_gradcheck_full_jacobian_small(device, monkeypatch):
    monkeypatch.setattr(K, "MAX_BLOCK_C", 2)
    x = make_logits((3, 3), device, torch.float64)
    target = torch.tensor([2, -100, 1], device=device)
    weight = make_weight(3, device, torch.float64)
    assert_gradcheck(cross_entropy, x, target, weight, reduction="mean", label_smoothing=0.25)
    assert_gradcheck(log_softmax, make_logits((2, 3), device, torch.float64), 1)


@pytest.mark.slow
@pytest.mark.parametrize("options", CE_GRADCHECK_OPTIONS, ids=CE_GRADCHECK_IDS)
@pytest.mark.parametrize("shape,block", SHAPES, ids=SHAPE_IDS)
def test_gradcheck_full_jacobian_grid(device, monkeypatch, shape, block, options):
    monkeypatch.setattr(K, "MAX_BLOCK_C", block)
    x, target, weight, options = _gradcheck_case(shape, device, options)
    assert_gradcheck(cross_entropy, x, target, weight, **options)


@pytest.mark.slow
@pytest.mark.parametrize("shape,block", SHAPES, ids=SHAPE_IDS)
def test_gradcheck_full_jacobian_grid_log_softmax_and_nll_loss(device, monkeypatch, shape, block):
    monkeypatch.setattr(K, "MAX_BLOCK_C", block)
    x = make_logits(shape, device, torch.float64)
    assert_gradcheck(log_softmax, x, 1)
    assert_gradcheck(nll_loss, x, make_target(shape, device, ignore_index=-100),
                     make_weight(shape[1], device, torch.float64), reduction="mean")


@pytest.mark.parametrize("shape,block", SHAPES, ids=SHAPE_IDS)
def test_small_column_blocks_split_the_rows(monkeypatch, shape, block):
    # The gradchecks above lower MAX_BLOCK_C to `block`: each row with C > 1 then spans two or
    # more column blocks, so the online log-sum-exp rescales across blocks.
    monkeypatch.setattr(K, "MAX_BLOCK_C", block)
    rows = shape[0] * math.prod(shape[2:])
    _, block_c, _ = K.plan_blocks(rows, shape[1], 1)
    assert shape[1] == 1 or math.ceil(shape[1] / block_c) >= 2


# ------------------------------------------------------------------------------------------------
# Parity with the naive reference and with torch
# ------------------------------------------------------------------------------------------------


def _ce_parity(device, shape, dtype, reduction, weighted, ignore, label_smoothing):
    x = make_logits(shape, device, dtype)
    ignore_index = 1 if ignore else -100
    target = make_target(shape, device, ignore_index if ignore else None)
    weight = make_weight(shape[1], device, dtype) if weighted else None
    out = assert_matches(bound(cross_entropy, target),
                         {"reference": bound(reference.cross_entropy, target),
                          "torch": bound(in_float32(F.cross_entropy), target)},
                         x, weight, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)
    expected = F.cross_entropy(x.detach(), target, weight, reduction=reduction, ignore_index=ignore_index,
                               label_smoothing=label_smoothing)
    assert out.dtype == expected.dtype and out.shape == expected.shape


@pytest.mark.parametrize("dtype", [torch.float32] + [pytest.param(d, marks=pytest.mark.slow) for d in LOW_PRECISION],
                         ids=str)
@pytest.mark.parametrize("shape", [(6, 7), (2, 5, 3, 2)], ids=["N,C", "N,C,d1,d2"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15], ids=["no_smoothing", "smoothing"])
@pytest.mark.parametrize("ignore", [False, True], ids=["all_count", "ignore_index"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_reference_and_torch(device, reduction, weighted, ignore, label_smoothing, shape, dtype):
    _ce_parity(device, shape, dtype, reduction, weighted, ignore, label_smoothing)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("shape", [(6, 7), (2, 5, 3, 2)], ids=["N,C", "N,C,d1,d2"])
@pytest.mark.parametrize("reduction,weighted,ignore,label_smoothing", [
    ("mean", False, False, 0.0), ("none", True, True, 0.15), ("sum", True, False, 0.15),
], ids=["mean", "none+weight+ignore+smoothing", "sum+weight+smoothing"])
def test_cross_entropy_low_precision_logits(device, reduction, weighted, ignore, label_smoothing, shape, dtype):
    _ce_parity(device, shape, dtype, reduction, weighted, ignore, label_smoothing)


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
def test_cross_entropy_over_many_column_blocks(device, monkeypatch, dtype):
    # The online log-sum-exp rescales its running sum whenever a later block holds a larger max.
    monkeypatch.setattr(K, "MAX_BLOCK_C", 16)
    x = make_logits((5, 130), device, dtype, scale=4.0)
    target = make_target((5, 130), device, ignore_index=-100)
    weight = make_weight(130, device, dtype)
    assert_matches(bound(cross_entropy, target), {"reference": bound(reference.cross_entropy, target),
                                                  "torch": bound(in_float32(F.cross_entropy), target)},
                   x, weight, reduction="mean", label_smoothing=0.1)
    assert_matches(log_softmax, {"reference": reference.log_softmax, "torch": log_softmax_in_float32}, x, 1)


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", [((4, 7), 1), ((4, 7), 0), ((2, 5, 3, 2), 1), ((2, 5, 3, 2), 3),
                                       ((2, 5, 3, 2), -2), ((130,), 0)])
def test_log_softmax_matches_reference_and_torch(device, shape, dim, dtype):
    x = make_logits(shape, device, dtype)
    out = assert_matches(log_softmax, {"reference": reference.log_softmax, "torch": log_softmax_in_float32}, x, dim)
    assert out.dtype == F.log_softmax(x.detach(), dim).dtype


@pytest.mark.parametrize("dtype", [torch.float32] + [pytest.param(d, marks=pytest.mark.slow) for d in LOW_PRECISION],
                         ids=str)
@pytest.mark.parametrize("shape", [(6, 7), (2, 5, 3, 2)], ids=["N,C", "N,C,d1,d2"])
@pytest.mark.parametrize("ignore", [False, True], ids=["all_count", "ignore_index"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_reference_and_torch(device, reduction, weighted, ignore, shape, dtype):
    log_probs = F.log_softmax(torch.randn(shape, device=device), 1).to(dtype).requires_grad_()
    target = make_target(shape, device, -100 if ignore else None)
    weight = make_weight(shape[1], device, dtype) if weighted else None
    out = assert_matches(bound(nll_loss, target), {"reference": bound(reference.nll_loss, target),
                                                   "torch": bound(in_float32(F.nll_loss), target)},
                         log_probs, weight, reduction=reduction)
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_nll_loss_low_precision(device, dtype):
    log_probs = F.log_softmax(torch.randn(2, 5, 3, 2, device=device), 1).to(dtype).requires_grad_()
    target = make_target((2, 5, 3, 2), device, -100)
    out = assert_matches(bound(nll_loss, target), {"reference": bound(reference.nll_loss, target),
                                                   "torch": bound(in_float32(F.nll_loss), target)},
                         log_probs, make_weight(5, device, dtype))
    assert out.dtype == dtype


def test_log_softmax_then_nll_loss_is_cross_entropy(device):
    x = make_logits((6, 9), device)
    target = make_target((6, 9), device, ignore_index=-100)
    weight = make_weight(9, device)
    composed = nll_loss(log_softmax(x, 1), target, weight)
    fused = cross_entropy(x, target, weight)
    assert_close(composed, fused)
    (g_composed,) = torch.autograd.grad(composed, x)
    (g_fused,) = torch.autograd.grad(fused, x)
    assert_close(g_composed, g_fused, name="dx")


def test_large_logits_and_masked_classes(device):
    # |x| ~ 1000: exp(x) overflows fp32 without the running max. -inf logits (a masked
    # vocabulary) have probability 0 and gradient 0, and the loss stays finite.
    x = torch.randn(4, 11, device=device) * 1000
    target = torch.tensor([0, 3, 5, 10], device=device)
    x[:, 1] = float("-inf")
    x = x.requires_grad_()
    for reduction in REDUCTIONS:
        assert_matches(bound(cross_entropy, target), {"torch": bound(F.cross_entropy, target)}, x,
                       reduction=reduction)
    assert_matches(log_softmax, {"torch": F.log_softmax}, x, 1)


def test_label_smoothing_is_accurate_with_a_large_common_offset(device):
    # Every logit shares an offset of 1e4, where one fp32 ulp is 1e-3: lse - x_t, or the smoothing
    # term as lse * sum(w) - sum(w x), would lose most digits of a loss of about 5. The kernel
    # takes (max - x_t) + log(sum) and sums w_c (x_c - x_t), differences of nearby numbers.
    x = torch.randn(4, 130, device=device) + 1e4
    target = make_target((4, 130), device)
    weight = make_weight(130, device)
    ours = cross_entropy(x, target, weight, reduction="none", label_smoothing=0.3)
    truth = F.cross_entropy(x.double(), target, weight.double(), reduction="none", label_smoothing=0.3)
    assert_close(ours.double(), truth, name="loss", dtype=torch.float32)


def test_many_partials_reduce_in_fixed_order(device, monkeypatch):
    # One row per program and a reduction block of 2: 'sum' and 'mean' fold 5 partials in 3 steps.
    monkeypatch.setattr(K, "TILE_ELEMENTS", 8)
    monkeypatch.setattr(K, "MAX_BLOCK_C", 8)
    monkeypatch.setattr(K, "REDUCE_BLOCK", 2)
    assert K.plan_blocks(5, 8, 1)[0] == 1
    x = make_logits((5, 8), device)
    target = make_target((5, 8), device, ignore_index=-100)
    weight = make_weight(8, device)
    for reduction in ("sum", "mean"):
        assert_matches(bound(cross_entropy, target), {"torch": bound(F.cross_entropy, target)}, x, weight,
                       reduction=reduction, label_smoothing=0.1)
        assert_matches(bound(nll_loss, target), {"torch": bound(F.nll_loss, target)}, x, weight, reduction=reduction)


def test_deterministic(device):
    x = make_logits((40, 130), device)
    target = make_target((40, 130), device, ignore_index=-100)
    weight = make_weight(130, device)
    results = []
    for _ in range(2):
        xi = x.detach().clone().requires_grad_()
        loss = cross_entropy(xi, target, weight, label_smoothing=0.1)
        loss.backward()
        results.append((loss, xi.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------


def _spy_on_copies(monkeypatch):
    calls = []
    original = torch.Tensor.contiguous

    def spy(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "contiguous", spy)
    return calls


def contiguous_nll_loss(input, target, *args, **kwargs):
    return F.nll_loss(input.clone(memory_format=torch.contiguous_format), target, *args, **kwargs)


@pytest.mark.parametrize("layout", ["class_dim_1_of_BTV", "channels_last"])
def test_strided_class_dim_is_read_in_place(device, monkeypatch, layout):
    # A language model's (B, T, V) logits passed as (B, V, T), and channels_last (N, C, H, W)
    # logits, are addressed through their strides; neither is copied.
    if layout == "class_dim_1_of_BTV":
        x = make_logits((2, 5, 11), device).detach().transpose(1, 2).requires_grad_()
        tokens = torch.randint(0, 11, (2, 6), device=device)
        target = tokens[:, 1:]  # a strided slice, read in place as well
    else:
        x = make_logits((2, 11, 3, 4), device).detach().to(memory_format=torch.channels_last).requires_grad_()
        target = make_target((2, 11, 3, 4), device)
    assert not x.is_contiguous()
    calls = _spy_on_copies(monkeypatch)
    for reduction in REDUCTIONS:
        assert_matches(bound(cross_entropy, target), {"torch": bound(F.cross_entropy, target)}, x,
                       reduction=reduction, label_smoothing=0.1)
        # torch's own nll_loss2d backward rejects a channels_last input: its oracle gets a copy.
        assert_matches(bound(nll_loss, target), {"torch": bound(contiguous_nll_loss, target)}, x, reduction=reduction)
    assert_matches(log_softmax, {"torch": F.log_softmax}, x, 1)
    assert [s for s in calls if s in (tuple(x.shape), tuple(target.shape))] == []


def test_views_that_need_a_copy(device):
    base = torch.randn(2, 6, 4, 5, device=device)
    x = base[:, :, :, 1:].requires_grad_()  # (H, W) no longer merges into one stride
    target = torch.randint(0, 6, (2, 4, 4), device=device).transpose(1, 2)  # copied too
    assert K.row_layout(x.shape, x.stride(), 1) is None
    assert_matches(bound(cross_entropy, target), {"torch": bound(F.cross_entropy, target)}, x, reduction="none")
    assert_matches(log_softmax, {"torch": F.log_softmax}, x, 1)


def test_expanded_and_transposed_upstream_gradients(device):
    x = make_logits((2, 5, 3, 4), device)
    target = make_target((2, 5, 3, 4), device, ignore_index=-100)
    xr = x.detach().clone().requires_grad_()
    # .sum() of a 'none' loss hands the backward an expanded (all-stride-0) gradient.
    cross_entropy(x, target, reduction="none").sum().backward()
    F.cross_entropy(xr, target, reduction="none").sum().backward()
    assert_close(x.grad, xr.grad, name="dx from an expanded upstream gradient")
    g = torch.randn(2, 4, 3, device=device).transpose(1, 2)
    (dx,) = torch.autograd.grad(cross_entropy(x, target, reduction="none", label_smoothing=0.2), x, g)
    (dxr,) = torch.autograd.grad(F.cross_entropy(xr, target, reduction="none", label_smoothing=0.2), xr, g)
    assert_close(dx, dxr, name="dx from a transposed upstream gradient")
    (dx,) = torch.autograd.grad(log_softmax(x, 1), x, g.unsqueeze(1).expand(2, 5, 3, 4))
    (dxr,) = torch.autograd.grad(F.log_softmax(xr, 1), xr, g.unsqueeze(1).expand(2, 5, 3, 4))
    assert_close(dx, dxr, name="log_softmax dx from an expanded upstream gradient")


# ------------------------------------------------------------------------------------------------
# Edge cases: empty, unbatched, uint8 targets, ignore everything, legacy arguments
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy warns about the 'mean' 0/0
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(device, reduction):
    x = torch.randn(0, 5, device=device, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long, device=device)
    for ours, theirs in ((cross_entropy, F.cross_entropy), (nll_loss, F.nll_loss)):
        loss, expected = ours(x, target, reduction=reduction), theirs(x.detach(), target, reduction=reduction)
        assert loss.shape == expected.shape and loss.dtype == expected.dtype
        assert torch.equal(loss.isnan(), expected.isnan())  # 'mean' of nothing is nan, as in torch
        assert torch.equal(loss.nan_to_num(), expected.nan_to_num())
        (dx,) = torch.autograd.grad(loss.sum(), x)
        assert dx.shape == x.shape
    assert log_softmax(torch.randn(0, 3, device=device), 1).shape == (0, 3)
    assert log_softmax(torch.randn(2, 0, device=device), 1).shape == (2, 0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy warns about the 'mean' 0/0
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_every_row_ignored_or_weightless_follows_torch(device, label_smoothing):
    # 'mean' over zero total weight is nan, with gradient 0 on ignored rows and nan on the others.
    x = make_logits((3, 5), device)
    ignored = torch.full((3,), -100, device=device)
    zero_weight = torch.tensor([0.0, 1, 1, 1, 1], device=device)
    weightless = torch.tensor([0, -100, 0], device=device)
    ops = [(lambda *a: cross_entropy(*a, label_smoothing=label_smoothing),
            lambda *a: F.cross_entropy(*a, label_smoothing=label_smoothing)), (nll_loss, F.nll_loss)]
    for target, weight in ((ignored, None), (weightless, zero_weight)):
        for ours, theirs in ops:
            loss = ours(x, target, weight)
            (dx,) = torch.autograd.grad(loss, x)
            xr = x.detach().clone().requires_grad_()
            expected = theirs(xr, target, weight)
            (dxr,) = torch.autograd.grad(expected, xr)
            assert loss.isnan() and expected.isnan()
            assert torch.equal(dx.isnan(), dxr.isnan()) and torch.equal(dx.nan_to_num(), dxr.nan_to_num())


@pytest.mark.parametrize("target_shape", [(), (1,)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_unbatched_input(device, reduction, target_shape):
    x = make_logits((7,), device)
    target = torch.full(target_shape, 3, device=device)
    weight = make_weight(7, device)
    # torch fails on a (1,) target here (with label smoothing in the forward, and in nll_loss's
    # backward); tritonprop handles it, and the oracle gets the equivalent () target.
    scalar_target = target.reshape(())
    out = assert_matches(bound(cross_entropy, target), {"torch": bound(F.cross_entropy, scalar_target)}, x, weight,
                         reduction=reduction, label_smoothing=0.1)
    assert out.shape == ()
    assert_matches(bound(nll_loss, target), {"torch": bound(F.nll_loss, scalar_target)}, x, weight,
                   reduction=reduction)
    assert_matches(log_softmax, {"torch": F.log_softmax}, x, 0)


def test_zero_dim_log_softmax(device):
    x = torch.tensor(3.0, device=device, requires_grad=True)
    assert_matches(log_softmax, {"torch": F.log_softmax}, x, 0)


def test_uint8_target(device):
    x = make_logits((5, 6), device)
    target = torch.tensor([0, 5, 2, 2, 1], dtype=torch.uint8, device=device)
    assert_matches(bound(cross_entropy, target), {"torch": bound(F.cross_entropy, target)}, x, ignore_index=2)
    assert_matches(bound(nll_loss, target), {"torch": bound(F.nll_loss, target)}, x, reduction="sum")


@pytest.mark.parametrize("size_average,reduce", [(None, False), (False, None), (True, True), (False, True)])
def test_legacy_size_average_and_reduce_map_like_torch(device, size_average, reduce):
    x = make_logits((4, 5), device).detach()
    target = make_target((4, 5), device)
    for ours, theirs in ((cross_entropy, F.cross_entropy), (nll_loss, F.nll_loss)):
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            loss = ours(x, target, size_average=size_average, reduce=reduce, reduction="mean")
        with pytest.warns(UserWarning):
            expected = theirs(x, target, size_average=size_average, reduce=reduce, reduction="mean")
        assert_close(loss, expected)


def test_label_smoothing_as_a_one_element_tensor_as_in_torch(device):
    x = make_logits((4, 5), device)
    target = make_target((4, 5), device)
    smoothing = torch.tensor(0.2)
    assert_matches(bound(cross_entropy, target), {"torch": bound(F.cross_entropy, target)}, x,
                   label_smoothing=smoothing)


def test_negative_label_smoothing_means_none_as_in_torch(device):
    x = make_logits((4, 5), device).detach()
    target = make_target((4, 5), device)
    assert_close(cross_entropy(x, target, label_smoothing=-0.5), F.cross_entropy(x, target, label_smoothing=-0.5))
    assert_close(cross_entropy(x, target, label_smoothing=-0.5), cross_entropy(x, target))


def test_log_softmax_dtype_argument_and_implicit_dim(device):
    x = make_logits((2, 3, 4), device)
    out = assert_matches(lambda t: log_softmax(t, 2, dtype=torch.float64),
                         {"torch": lambda t: F.log_softmax(t, 2, dtype=torch.float64)}, x)
    assert out.dtype == torch.float64
    for shape in ((2, 3, 4), (2, 3, 4, 5)):
        x = torch.randn(shape, device=device)
        with pytest.warns(UserWarning, match="Implicit dimension choice for log_softmax has been deprecated"):
            ours = log_softmax(x)
        with pytest.warns(UserWarning):
            theirs = F.log_softmax(x)
        assert_close(ours, theirs)


# ------------------------------------------------------------------------------------------------
# Modules, autocast, backend routing
# ------------------------------------------------------------------------------------------------


def test_cross_entropy_module_loads_a_torch_state_dict(device):
    theirs = torch.nn.CrossEntropyLoss(weight=make_weight(6), ignore_index=2, reduction="sum",
                                       label_smoothing=0.1).to(device)
    ours = CrossEntropyLoss(weight=torch.ones(6), ignore_index=2, reduction="sum", label_smoothing=0.1).to(device)
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys() == {"weight"}
    x = make_logits((5, 6, 3), device)
    target = make_target((5, 6, 3), device, ignore_index=2)
    assert_matches(lambda t: ours(t, target), {"torch": lambda t: theirs(t, target)}, x)


def test_nll_and_log_softmax_modules(device):
    theirs = torch.nn.NLLLoss(weight=make_weight(6), reduction="none").to(device)
    ours = NLLLoss(weight=torch.ones(6), reduction="none").to(device)
    ours.load_state_dict(theirs.state_dict())
    assert isinstance(ours, torch.nn.NLLLoss) and isinstance(LogSoftmax(1), torch.nn.LogSoftmax)
    x = make_logits((5, 6), device)
    target = make_target((5, 6), device, ignore_index=-100)
    assert_matches(lambda t: ours(LogSoftmax(dim=1)(t), target),
                   {"torch": lambda t: theirs(torch.nn.LogSoftmax(dim=1)(t), target)}, x)


def test_autocast_casts_like_torch(device):
    # cross_entropy and nll_loss run in float32 under autocast; log_softmax follows the device's
    # autocast policy (float32 on CUDA, unchanged on the CPU).
    x = make_logits((4, 7), device, torch.bfloat16).detach()
    target = make_target((4, 7), device)
    weight = make_weight(7, device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        pairs = [
            (cross_entropy(x, target, weight), F.cross_entropy(x, target, weight)),
            (nll_loss(x, target, weight), F.nll_loss(x, target, weight)),
            (log_softmax(x, 1), F.log_softmax(x, 1)),
            (cross_entropy(x.float(), target), F.cross_entropy(x.float(), target)),
        ]
    for ours, theirs in pairs:
        assert ours.dtype == theirs.dtype
    assert pairs[0][0].dtype == torch.float32
    assert_close(pairs[0][0], F.cross_entropy(x.float(), target, weight))


def test_reference_backend_routes_to_the_reference(device, monkeypatch):
    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("a Triton kernel ran under TRITONPROP_BACKEND=reference")

    for name in ("cross_entropy_forward", "cross_entropy_probs_forward", "nll_loss_forward", "log_softmax_forward"):
        monkeypatch.setattr(K, name, kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    x = make_logits((4, 7), device)
    target = make_target((4, 7), device, ignore_index=-100)
    assert_close(cross_entropy(x, target, label_smoothing=0.1), F.cross_entropy(x, target, label_smoothing=0.1))
    probabilities = make_probabilities((4, 7), device)
    assert_close(cross_entropy(x, probabilities, label_smoothing=0.1),
                 F.cross_entropy(x, probabilities, label_smoothing=0.1))
    assert_close(nll_loss(x, target), F.nll_loss(x, target))
    assert_close(log_softmax(x, 0), F.log_softmax(x, 0))
    with pytest.raises(IndexError, match="Target 9 is out of bounds"):
        cross_entropy(x, torch.tensor([0, 1, 2, 9], device=device))


# ------------------------------------------------------------------------------------------------
# Probability targets: a floating-point target shaped like the logits (class dim 1)
# ------------------------------------------------------------------------------------------------


def make_probabilities(shape, device="cpu", dtype=torch.float32):
    """A target of class probabilities (class dim 1, or 0 for a 1-D input) that requires grad."""
    dim = 0 if len(shape) == 1 else 1
    return torch.softmax(torch.randn(shape, device=device), dim).to(dtype).requires_grad_()


PROBABILITY_OPTIONS = [
    dict(reduction="mean"),
    dict(reduction="sum", weighted=True, label_smoothing=0.2),
    dict(reduction="none", weighted=True, label_smoothing=0.1),
]
PROBABILITY_IDS = ["mean", "sum+weight+smoothing", "none+weight+smoothing"]


def _probability_case(shape, device, dtype, options):
    options = dict(options)
    classes = shape[0] if len(shape) == 1 else shape[1]
    weight = make_weight(classes, device, dtype) if options.pop("weighted", False) else None
    return make_logits(shape, device, dtype), make_probabilities(shape, device, dtype), weight, options


@pytest.mark.parametrize("options", PROBABILITY_OPTIONS, ids=PROBABILITY_IDS)
@pytest.mark.parametrize("shape,block", [((4, 7), 4), ((2, 5, 3), 2), ((6,), 4)], ids=["N,C", "N,C,d", "C"])
def test_gradcheck_probability_targets_wrt_input_and_target(device, monkeypatch, shape, block, options):
    monkeypatch.setattr(K, "MAX_BLOCK_C", block)
    x, target, weight, options = _probability_case(shape, device, torch.float64, options)
    assert_gradcheck(cross_entropy, x, target, weight, fast_mode=True, **options)


@pytest.mark.parametrize("options", PROBABILITY_OPTIONS, ids=PROBABILITY_IDS)
@pytest.mark.parametrize("shape", [(6, 7), (2, 5, 3, 2), (7,)], ids=["N,C", "N,C,d1,d2", "C"])
def test_probability_targets_match_reference_and_torch(device, monkeypatch, shape, options):
    monkeypatch.setattr(K, "MAX_BLOCK_C", 4)
    x, target, weight, options = _probability_case(shape, device, torch.float32, options)
    assert_matches(cross_entropy, {"reference": reference.cross_entropy, "torch": F.cross_entropy}, x, target,
                   weight, **options)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_probability_targets_low_precision(device, dtype):
    x, target, weight, _ = _probability_case((5, 6), device, dtype, dict(weighted=True))

    def torch_in_float32(input, target, weight, **kwargs):
        return F.cross_entropy(input.float(), target.float(), weight.float(), **kwargs).to(input.dtype)

    assert_matches(cross_entropy, {"torch (fp32 math)": torch_in_float32}, x, target, weight, reduction="none",
                   label_smoothing=0.1)


def test_probability_targets_gradient_of_the_target_alone(device):
    x = make_logits((4, 6), device).detach()
    target = make_probabilities((4, 6), device)
    assert_matches(cross_entropy, {"torch": F.cross_entropy}, x, target, reduction="sum", label_smoothing=0.3)
    x.requires_grad_()
    fixed = target.detach()
    assert_matches(lambda a: cross_entropy(a, fixed), {"torch": lambda a: F.cross_entropy(a, fixed)}, x)


@pytest.mark.parametrize("layout", ["transposed", "channels_last"])
def test_probability_targets_strided_logits_and_target_are_read_in_place(device, monkeypatch, layout):
    if layout == "transposed":
        x = make_logits((3, 4, 5), device).detach().transpose(1, 2).requires_grad_()  # class dim strided
        target = torch.rand(3, 4, 5, device=device).transpose(1, 2).requires_grad_()
    else:
        x = make_logits((2, 5, 3, 2), device).detach().to(memory_format=torch.channels_last).requires_grad_()
        target = make_probabilities((2, 5, 3, 2), device).detach().to(memory_format=torch.channels_last)
        target.requires_grad_()
    expected = F.cross_entropy(x, target, reduction="none", label_smoothing=0.1)
    g = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x, target), g)
    calls = record_copy_calls(monkeypatch)
    loss = cross_entropy(x, target, reduction="none", label_smoothing=0.1)
    grads = torch.autograd.grad(loss, (x, target), g)
    assert calls == []
    assert_close(loss, expected)
    for ours, theirs in zip(grads, expected_grads):
        assert_close(ours, theirs)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy warns about the 'mean' 0/0
@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (2, 3, 0), (0,)], ids=["N=0", "C=0", "spatial=0", "C=0,1-D"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_probability_targets_on_empty_tensors_follow_torch(device, shape, reduction):
    x = torch.randn(shape, device=device, requires_grad=True)
    target = torch.rand(shape, device=device, requires_grad=True)
    loss = cross_entropy(x, target, reduction=reduction)
    expected = F.cross_entropy(x, target, reduction=reduction)
    assert loss.shape == expected.shape
    assert torch.equal(loss.isnan(), expected.isnan()) and torch.equal(loss.nan_to_num(), expected.nan_to_num())
    dx, dt = torch.autograd.grad(loss.sum(), (x, target))
    assert dx.shape == x.shape and dt.shape == target.shape


def test_probability_target_of_a_narrower_dtype_is_widened_as_torch_promotes(device):
    x = make_logits((4, 5), device)
    target = make_probabilities((4, 5), device, torch.float16)
    assert_matches(cross_entropy, {"torch": F.cross_entropy}, x, target, label_smoothing=0.2)


@pytest.mark.parametrize("case", ["wider_target", "wider_weight", "weight_requires_grad"])
def test_probability_targets_not_implemented(case):
    x, target, weight = torch.randn(4, 5), torch.rand(4, 5), None
    if case == "wider_target":
        target = target.double()
    elif case == "wider_weight":
        weight = torch.ones(5, dtype=torch.float64)
    else:
        weight = torch.ones(5, requires_grad=True)
    F.cross_entropy(x, target, weight)  # torch computes each of these
    with pytest.raises(NotImplementedError, match="cross_entropy: .*(weight|target)"):
        cross_entropy(x, target, weight)


# ------------------------------------------------------------------------------------------------
# Class weights stored as strided or expanded views
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["every_other_element", "expanded_scalar"])
def test_strided_and_expanded_class_weights(device, kind):
    if kind == "every_other_element":
        weight = make_weight(14, device)[::2]
    else:
        weight = torch.tensor(0.7, device=device).expand(7)
    x = make_logits((5, 7), device)
    target = make_target((5, 7), device, ignore_index=-100)
    probabilities = make_probabilities((5, 7), device)
    # The weight is bound, not passed: assert_matches copies its arguments, and an expanded
    # tensor cannot be copied into its own layout.
    cases = [(cross_entropy, F.cross_entropy, target, dict(label_smoothing=0.2)),
             (nll_loss, F.nll_loss, target, dict(reduction="sum")),
             (cross_entropy, F.cross_entropy, probabilities, {})]
    for ours, theirs, t, kwargs in cases:
        assert_matches(lambda a: ours(a, t, weight, **kwargs), {"torch": lambda a: theirs(a, t, weight, **kwargs)}, x)


# ------------------------------------------------------------------------------------------------
# Empty tensors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 0, 0), (0, 3, 2), (2, 0), (0,)])
def test_log_softmax_of_empty_tensors_along_every_dim(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    for dim in range(-len(shape), len(shape)):
        y = log_softmax(x, dim)
        assert y.shape == F.log_softmax(x, dim).shape
        (dx,) = torch.autograd.grad(y.sum(), x)
        assert dx.shape == x.shape


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy warns about the 'mean' 0/0
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_index_losses_on_empty_spatial_dims_follow_torch(device, reduction):
    x = torch.randn(2, 3, 0, device=device, requires_grad=True)
    target = torch.zeros(2, 0, dtype=torch.long, device=device)
    for ours, theirs in ((cross_entropy, F.cross_entropy), (nll_loss, F.nll_loss)):
        loss, expected = ours(x, target, reduction=reduction), theirs(x, target, reduction=reduction)
        assert loss.shape == expected.shape
        assert torch.equal(loss.isnan(), expected.isnan())
        (dx,) = torch.autograd.grad(loss.sum(), x)
        assert dx.shape == x.shape


# ------------------------------------------------------------------------------------------------
# Double backward: every backward here is itself differentiable
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,dim", [((3, 4), 1), ((2, 3, 2), 1), ((3, 4), 0)])
def test_gradgradcheck_log_softmax(device, shape, dim):
    assert_gradgradcheck(log_softmax, make_logits(shape, device, torch.float64), dim, fast_mode=True)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradgradcheck_nll_loss(device, reduction, weighted):
    x = make_logits((4, 3), device, torch.float64)
    target = torch.tensor([0, 2, -100, 1], device=device)
    weight = make_weight(3, device, torch.float64) if weighted else None
    assert_gradgradcheck(nll_loss, x, target, weight, reduction=reduction, fast_mode=True)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2], ids=["no_smoothing", "smoothing"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradgradcheck_cross_entropy_class_indices(device, reduction, label_smoothing):
    x = make_logits((4, 3), device, torch.float64)
    target = torch.tensor([0, 2, 1, 1], device=device)
    weight = make_weight(3, device, torch.float64)
    assert_gradgradcheck(cross_entropy, x, target, weight, reduction=reduction, ignore_index=1,
                         label_smoothing=label_smoothing, fast_mode=True)


def test_gradgradcheck_cross_entropy_spatial_unweighted(device):
    x = make_logits((2, 3, 2), device, torch.float64)
    target = torch.tensor([[0, 2], [1, -100]], device=device)
    assert_gradgradcheck(cross_entropy, x, target, fast_mode=True)


@pytest.mark.parametrize("options", PROBABILITY_OPTIONS, ids=PROBABILITY_IDS)
def test_gradgradcheck_cross_entropy_probability_targets(device, options):
    x, target, weight, options = _probability_case((3, 4), device, torch.float64, options)
    assert_gradgradcheck(cross_entropy, x, target, weight, fast_mode=True, **options)


@pytest.mark.parametrize("op", ["log_softmax", "nll_loss", "cross_entropy", "cross_entropy_probabilities"])
def test_gradient_penalty_matches_torch(device, op):
    x = make_logits((4, 5), device)
    weight = make_weight(5, device)
    target = torch.tensor([0, 4, -100, 2], device=device)
    probabilities = make_probabilities((4, 5), device).detach()
    ours, theirs, args = {
        "log_softmax": (log_softmax, F.log_softmax, (1,)),
        "nll_loss": (lambda a, t, w: nll_loss(a.tanh(), t, w), lambda a, t, w: F.nll_loss(a.tanh(), t, w),
                     (target, weight)),
        "cross_entropy": (lambda *a: cross_entropy(*a, label_smoothing=0.1),
                          lambda *a: F.cross_entropy(*a, label_smoothing=0.1), (target, weight)),
        "cross_entropy_probabilities": (lambda *a: cross_entropy(*a, label_smoothing=0.1),
                                        lambda *a: F.cross_entropy(*a, label_smoothing=0.1), (probabilities, weight)),
    }[op]
    if op == "log_softmax":
        ours, theirs = (lambda a, d: log_softmax(a, d) ** 2), (lambda a, d: F.log_softmax(a, d) ** 2)
    assert_gradient_penalty_matches(ours, theirs, x, *args)


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors that name the argument; the same error type as torch where marked
# ------------------------------------------------------------------------------------------------

# (case, error, message, torch raises the same type)
CE_BAD_ARGUMENTS = [
    ("float_target_of_another_shape", RuntimeError, "expected target dtype to be Long or Byte, but got torch.float32",
     True),
    ("integer_target_shaped_like_input", RuntimeError, "Expected floating point type for target with class "
     "probabilities", True),
    ("probability_target_ignore_index", RuntimeError, "ignore_index is not supported for floating point target", True),
    ("probability_target_weight_size", RuntimeError, "weight tensor should be defined either for all 5 classes", True),
    ("int32_target", RuntimeError, "expected target dtype to be Long or Byte, but got torch.int32", True),
    ("target_out_of_range", IndexError, "Target 5 is out of bounds", True),
    ("negative_target", IndexError, "Target -3 is out of bounds", True),
    ("weight_size", RuntimeError, "weight tensor should be defined either for all 5 classes", True),
    ("weight_dtype", RuntimeError, "expected scalar type torch.float32 but found torch.float64", True),
    ("weight_requires_grad", RuntimeError, "not differentiable with respect to weight", True),
    ("bad_reduction", ValueError, "avg is not a valid value for reduction", True),
    ("label_smoothing_above_one", RuntimeError, "label_smoothing must be between 0.0 and 1.0", True),
    ("label_smoothing_tensor_above_one", RuntimeError, "label_smoothing must be between 0.0 and 1.0", True),
    ("label_smoothing_not_a_number", TypeError, "label_smoothing must be a float, got str", True),
    ("batch_mismatch", ValueError, r"Expected input batch_size \(4\) to match target batch_size \(3\)", True),
    ("target_dims", RuntimeError, r"Expected target size \[4, 3\], got \[4\]", True),
    ("spatial_mismatch", RuntimeError, r"size mismatch \(got input: \[4, 5, 3\] , target: \[4, 2\]", True),
    ("multi_target", RuntimeError, "0D or 1D target tensor expected, multi-target not supported", True),
    ("unbatched_target_size", ValueError, "For 1D input, 1D target must have size 1, but got target size: 2", True),
    ("integer_input", NotImplementedError, "input must be a floating-point tensor", True),
    ("input_not_tensor", TypeError, "input must be a torch.Tensor", True),
    ("target_not_tensor", TypeError, "target must be a torch.Tensor", True),
    ("ignore_index_float", TypeError, "ignore_index must be an int", True),
]


def _bad_ce_arguments(case):
    kwargs = dict(input=torch.randn(4, 5), target=torch.tensor([0, 1, 4, 2]))
    if case == "float_target_of_another_shape":
        kwargs["target"] = torch.rand(4)
    elif case == "integer_target_shaped_like_input":
        kwargs["target"] = torch.zeros(4, 5, dtype=torch.long)
    elif case == "probability_target_ignore_index":
        kwargs.update(target=torch.softmax(torch.randn(4, 5), 1), ignore_index=0)
    elif case == "probability_target_weight_size":
        kwargs.update(target=torch.softmax(torch.randn(4, 5), 1), weight=torch.ones(3))
    elif case == "int32_target":
        kwargs["target"] = kwargs["target"].int()
    elif case == "target_out_of_range":
        kwargs["target"] = torch.tensor([0, 1, 5, 2])
    elif case == "negative_target":
        kwargs["target"] = torch.tensor([0, -3, 1, 2])
    elif case == "weight_size":
        kwargs["weight"] = torch.ones(3)
    elif case == "weight_dtype":
        kwargs["weight"] = torch.ones(5, dtype=torch.float64)
    elif case == "weight_requires_grad":
        kwargs["weight"] = torch.ones(5, requires_grad=True)
    elif case == "bad_reduction":
        kwargs["reduction"] = "avg"
    elif case == "label_smoothing_above_one":
        kwargs["label_smoothing"] = 1.5
    elif case == "label_smoothing_tensor_above_one":
        kwargs["label_smoothing"] = torch.tensor(1.5)
    elif case == "label_smoothing_not_a_number":
        kwargs["label_smoothing"] = "0.1"
    elif case == "batch_mismatch":
        kwargs["target"] = torch.tensor([0, 1, 2])
    elif case == "target_dims":
        kwargs.update(input=torch.randn(4, 5, 3), target=torch.tensor([0, 1, 2, 3]))
    elif case == "spatial_mismatch":
        kwargs.update(input=torch.randn(4, 5, 3), target=torch.zeros(4, 2, dtype=torch.long))
    elif case == "multi_target":
        kwargs["target"] = torch.zeros(4, 1, dtype=torch.long)
    elif case == "unbatched_target_size":
        kwargs.update(input=torch.randn(5), target=torch.tensor([1, 2]))
    elif case == "integer_input":
        kwargs["input"] = torch.ones(4, 5, dtype=torch.int64)
    elif case == "input_not_tensor":
        kwargs["input"] = np.ones((4, 5))
    elif case == "target_not_tensor":
        kwargs["target"] = [0, 1, 4, 2]
    elif case == "ignore_index_float":
        kwargs["ignore_index"] = 1.5
    return kwargs


@pytest.mark.parametrize("case,error,message,torch_agrees", CE_BAD_ARGUMENTS, ids=[c[0] for c in CE_BAD_ARGUMENTS])
def test_cross_entropy_bad_arguments(case, error, message, torch_agrees):
    kwargs = _bad_ce_arguments(case)
    with pytest.raises(error, match=f"cross_entropy.*{message}"):
        cross_entropy(**kwargs)
    if torch_agrees:
        with pytest.raises(error):
            F.cross_entropy(**kwargs)


@pytest.mark.parametrize("case,error,message", [
    ("target_out_of_range", IndexError, "nll_loss: Target 5 is out of bounds"),
    ("weight_size", RuntimeError, "nll_loss: weight tensor should be defined either for all 5 classes"),
    ("zero_dim_input", ValueError, r"nll_loss: Expected 1 or more dimensions \(got 0\)"),
    ("float_target", RuntimeError, "nll_loss: expected target dtype to be Long or Byte, but got torch.float32"),
])
def test_nll_loss_bad_arguments(case, error, message):
    kwargs = _bad_ce_arguments(case) if case in ("target_out_of_range", "weight_size") else {}
    if case == "zero_dim_input":
        kwargs = dict(input=torch.tensor(1.0), target=torch.tensor(0))
    elif case == "float_target":
        kwargs = dict(input=torch.randn(4, 5), target=torch.rand(4))
    with pytest.raises(error, match=message):
        nll_loss(**kwargs)


@pytest.mark.parametrize("case,error,message", [
    ("dim_out_of_range", IndexError, r"log_softmax: Dimension out of range \(expected to be in range of \[-2, 1\], "
                                     r"but got 2\)"),
    ("integer_input", NotImplementedError, "log_softmax: input must be a floating-point tensor"),
    ("dim_not_int", TypeError, "log_softmax: dim must be an int"),
])
def test_log_softmax_bad_arguments(case, error, message):
    x = torch.randn(2, 3)
    args = {"dim_out_of_range": (x, 2), "integer_input": (x.long(), 1), "dim_not_int": (x, 1.0)}[case]
    with pytest.raises(error, match=message):
        log_softmax(*args)


# ------------------------------------------------------------------------------------------------
# The numpy reference with the hand-derived backward
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,label_smoothing", [(False, 0.0), (True, 0.0), (False, 0.2), (True, 0.3)])
def test_numpy_reference_matches_autograd(reduction, weighted, label_smoothing):
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    target = make_target((6, 7), ignore_index=-100)
    weight = make_weight(7, dtype=torch.float64) if weighted else None
    loss = F.cross_entropy(x, target, weight, reduction=reduction, label_smoothing=label_smoothing)
    dloss = torch.randn_like(loss)
    loss.backward(dloss)
    loss_np, cache = cross_entropy_numpy.cross_entropy_forward(
        x.detach().numpy(), target.numpy(), None if weight is None else weight.numpy(), -100, reduction,
        label_smoothing)
    dx = cross_entropy_numpy.cross_entropy_backward(dloss.numpy(), cache)
    assert_close(torch.as_tensor(loss_np), loss.detach(), name="loss")
    assert_close(torch.from_numpy(dx), x.grad, name="dx")


def test_numpy_log_softmax_matches_autograd():
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    y = F.log_softmax(x, 1)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_np, cache = cross_entropy_numpy.log_softmax_forward(x.detach().numpy())
    assert_close(torch.from_numpy(y_np), y.detach(), name="y")
    assert_close(torch.from_numpy(cross_entropy_numpy.log_softmax_backward(dy.numpy(), cache)), x.grad, name="dx")
