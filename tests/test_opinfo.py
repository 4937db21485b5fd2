"""PyTorch's own OpInfo sample inputs, run through tritonprop's functionals.

torch's `op_db` is the set of inputs torch tests its own functionals with. This file proves that,
for every deterministic sample of the functionals tritonprop replaces, in float64 and float32:
- where torch computes a result, tritonprop computes the same forward value, the same gradient
  for every floating input that requires grad, and leaves its tensor arguments (running
  statistics) in the same state, within `helpers.TOLERANCES` for the dtype;
- where torch raises, tritonprop raises the very same exception type;
- for torch's error inputs (conv2d, gelu), tritonprop raises the type torch documents.
The random samples (dropout in training, attention with dropout_p > 0) are checked instead by
reproducibility under a seed; dropout's also by the exact form of each output element and
gradient, and by statistics over the sample's values tiled to a few thousand elements.
"""
from __future__ import annotations

import math
from unittest import mock

import pytest
import torch

pytest.importorskip("expecttest", reason="torch's OpInfo database needs expecttest (requirements-dev.txt)")
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal import common_utils  # noqa: E402

from helpers import assert_close, assert_matches
from tritonprop import ops

# (OpInfo name, variant) -> tritonprop's functional. 'nn.functional.batch_norm' has a second
# variant, 'without_cudnn', with the identical sample function: it only switches cuDNN off, which
# changes nothing for kernels that never call cuDNN, so running it again would test nothing new.
OURS = {
    ("nn.functional.conv2d", ""): ops.conv2d,
    ("nn.functional.batch_norm", ""): ops.batch_norm,
    ("nn.functional.layer_norm", ""): ops.layer_norm,
    ("nn.functional.linear", ""): ops.linear,
    ("nn.functional.cross_entropy", ""): ops.cross_entropy,
    ("nn.functional.nll_loss", ""): ops.nll_loss,
    ("log_softmax", ""): ops.log_softmax,
    ("log_softmax", "with_dtype"): ops.log_softmax,
    ("nn.functional.scaled_dot_product_attention", ""): ops.scaled_dot_product_attention,
    ("nn.functional.gelu", ""): ops.gelu,
    ("nn.functional.relu", ""): ops.relu,
    ("nn.functional.dropout", ""): ops.dropout,
}
OPINFOS = {(info.name, info.variant_test_name): info for info in op_db
           if (info.name, info.variant_test_name) in OURS}
DTYPES = [torch.float64, torch.float32]


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')}{list(value.shape)}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_describe(v) for v in value) + ")"
    return repr(value)


def _sample_id(sample) -> str:
    parts = [_describe(sample.input)] + [_describe(a) for a in sample.args]
    parts += [f"{k}={_describe(v)}" for k, v in sample.kwargs.items()]
    return " ".join(parts)


def _is_random(key, sample) -> bool:
    """A sample whose torch result depends on the random generator: it has no single right answer."""
    name = key[0]
    if name == "nn.functional.dropout":
        p = sample.kwargs.get("p", 0.5)
        return sample.kwargs.get("training", True) and 0.0 < p < 1.0
    if name == "nn.functional.scaled_dot_product_attention":
        return sample.kwargs.get("dropout_p", 0.0) > 0.0
    return False


def _generate():
    """Every sample of every op and dtype, drawn once at collection from a fixed seed.

    The samples are a few tiny tensors each, so keeping them is cheaper than drawing them again
    in every test; the fixed seed makes a failing id name the same tensors on every run.
    """
    deterministic, random_samples, errors = [], [], []
    # torch's sample iterators look for the running unittest.TestCase on the call stack
    # (`extract_test_fn`, an inspect.stack() of about 0.4 s per call: 23 s of this file's
    # collection, in every worker). At collection there is none and it returns None, which is
    # what it is told to return here: the samples and their seeds are the same.
    with torch.random.fork_rng(), mock.patch.object(common_utils, "extract_test_fn", lambda: None):
        for key, info in OPINFOS.items():
            short = key[0].removeprefix("nn.functional.") + (f".{key[1]}" if key[1] else "")
            for dtype in DTYPES:
                torch.manual_seed(0)
                for index, sample in enumerate(info.sample_inputs("cpu", dtype, requires_grad=True)):
                    case = (key, sample)
                    case_id = f"{short}-{str(dtype).removeprefix('torch.')}-{index}-{_sample_id(sample)}"
                    if not _is_random(key, sample):
                        deterministic.append(pytest.param(*case, id=case_id))
                    else:
                        # Each random attention sample costs ~5 s of interpreted kernels (three
                        # forwards, two backwards); float64 runs the same kernel code by default,
                        # which keeps the default run under ~90 s of CPU.
                        slow = key[0] == "nn.functional.scaled_dot_product_attention" and dtype != torch.float64
                        random_samples.append(pytest.param(*case, id=case_id, marks=[pytest.mark.slow] if slow else []))
            if info.error_inputs_func is not None:
                torch.manual_seed(0)
                for index, error in enumerate(info.error_inputs("cpu")):
                    case_id = f"{short}-{index}-{_sample_id(error.sample_input)}"
                    errors.append(pytest.param(key, error, id=case_id))
    return deterministic, random_samples, errors


DETERMINISTIC_SAMPLES, RANDOM_SAMPLES, ERROR_INPUTS = _generate()


def test_every_functional_has_its_opinfo():
    """A renamed OpInfo would otherwise drop its samples from this file without a word."""
    assert set(OPINFOS) == set(OURS)


def _fresh_arguments(sample):
    """Independent leaf copies of the sample's tensors, so neither call can see the other's effects."""
    def copy(value):
        if isinstance(value, torch.Tensor):
            return value.detach().clone().requires_grad_(value.requires_grad)
        if isinstance(value, (list, tuple)):
            return type(value)(copy(v) for v in value)
        return value
    return copy(sample.input), copy(list(sample.args)), copy(dict(sample.kwargs))


class _IntegerTensor:
    """Stands for an integer tensor argument in a call to `assert_matches`, whose per-dtype
    tolerances only cover floating tensors; the wrapped function puts the tensor back."""

    def __init__(self, position: int):
        self.position = position


def _integer_tensors(sample):
    values = [sample.input, *sample.args, *sample.kwargs.values()]
    return [v for v in values if isinstance(v, torch.Tensor) and not v.is_floating_point()]


def _hold_integer_tensors(sample):
    """(args, kwargs, held): the sample's arguments with integer tensors replaced by placeholders,
    and copies of those tensors, which both functions share (they never require grad)."""
    held = []

    def hold(value):
        if isinstance(value, torch.Tensor) and not value.is_floating_point():
            held.append(value.clone())
            return _IntegerTensor(len(held) - 1)
        return value

    args = [hold(v) for v in (sample.input, *sample.args)]
    kwargs = {k: hold(v) for k, v in sample.kwargs.items()}
    return args, kwargs, held


def _with_integer_tensors(fn, held):
    def put_back(value):
        return held[value.position] if isinstance(value, _IntegerTensor) else value

    def call(*args, **kwargs):
        return fn(*[put_back(a) for a in args], **{k: put_back(v) for k, v in kwargs.items()})
    return call


def _raise_the_same(torch_error: Exception, ours, sample) -> None:
    x, args, kwargs = _fresh_arguments(sample)
    with pytest.raises(Exception) as raised:
        ours(x, *args, **kwargs)
    # Exactly torch's type: NotImplementedError is a RuntimeError, so isinstance would hide it.
    assert type(raised.value) is type(torch_error), (
        f"torch raised {type(torch_error).__name__}({torch_error}); "
        f"tritonprop raised {type(raised.value).__name__}({raised.value})"
    )


@pytest.mark.parametrize("key, sample", DETERMINISTIC_SAMPLES)
def test_sample_matches_torch(key, sample):
    info, ours = OPINFOS[key], OURS[key]
    x, args, kwargs = _fresh_arguments(sample)
    try:
        info.op(x, *args, **kwargs)
    except Exception as torch_error:  # noqa: BLE001  (any error torch raises is the contract)
        _raise_the_same(torch_error, ours, sample)
        return
    args, kwargs, integer_tensors = _hold_integer_tensors(sample)
    oracle = _with_integer_tensors(info.op, integer_tensors)
    assert_matches(_with_integer_tensors(ours, integer_tensors), {"torch": oracle}, *args, **kwargs)
    for held, original in zip(integer_tensors, _integer_tensors(sample)):
        assert torch.equal(held, original), "an integer argument (a target) was changed by the call"


@pytest.mark.parametrize("key, error", ERROR_INPUTS)
def test_error_input_raises_torch_type(key, error):
    info, ours = OPINFOS[key], OURS[key]
    sample = error.sample_input
    x, args, kwargs = _fresh_arguments(sample)
    with pytest.raises(error.error_type) as torch_raised:
        info.op(x, *args, **kwargs)
    _raise_the_same(torch_raised.value, ours, sample)


# The sample's values are tiled to about this many elements for the statistics, so that they have
# a standard error of a few percent even for a one-element sample.
POOLED_ELEMENTS = 4096
SIGMAS = 4.5


def _dropout_sample_statistics(sample):
    p = sample.kwargs.get("p", 0.5)
    x = sample.input.detach().reshape(-1)
    x = x.repeat(math.ceil(POOLED_ELEMENTS / max(x.numel(), 1)))
    torch.manual_seed(0)
    y = ops.dropout(x, **sample.kwargs).double()
    x = x.double()
    n = y.numel()
    zero_fraction = (y == 0).double().mean().item()
    assert abs(zero_fraction - p) <= SIGMAS * math.sqrt(p * (1 - p) / n), f"zero fraction {zero_fraction} vs p={p}"
    # Each element is x/(1-p) with probability 1-p, else 0: mean x, variance x^2 p/(1-p).
    sigma = math.sqrt((x ** 2).sum().item() * p / (1 - p)) / n
    mean_gap = abs(y.mean().item() - x.mean().item())
    assert mean_gap <= SIGMAS * sigma, f"output mean is {mean_gap:.3g} from the input mean (sigma {sigma:.3g})"


def _dropout_sample_form(sample):
    """Same seed, same output; each element is 0 or x/(1-p); the gradient is the same mask, scaled."""
    p = sample.kwargs.get("p", 0.5)
    x, args, kwargs = _fresh_arguments(sample)
    torch.manual_seed(7)
    y = ops.dropout(x, *args, **kwargs)
    torch.manual_seed(7)
    again = ops.dropout(x.detach(), *args, **kwargs)
    assert torch.equal(y.detach(), again), "dropout is not reproducible under the same torch.manual_seed"
    kept = y.detach() != 0
    expected = torch.where(kept, x.detach() / (1 - p), torch.zeros_like(x))
    assert_close(y.detach(), expected, name="dropout output (x/(1-p) where kept)")
    upstream = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, upstream)
    assert_close(grad, torch.where(kept, upstream / (1 - p), torch.zeros_like(upstream)),
                 name="dropout gradient (upstream/(1-p) where kept)")


def _attention_dropout_sample(sample):
    """Same seed, same output and gradients; dropout changes the output; torch's shape and dtype."""
    def run():
        q, args, kwargs = _fresh_arguments(sample)
        torch.manual_seed(7)
        out = ops.scaled_dot_product_attention(q, *args, **kwargs)
        leaves = [q] + [a for a in args if isinstance(a, torch.Tensor)]
        return out, torch.autograd.grad(out, leaves, torch.ones_like(out))

    out, grads = run()
    again, grads_again = run()
    assert torch.equal(out, again), "attention dropout is not reproducible under the same torch.manual_seed"
    for g, g_again in zip(grads, grads_again):
        assert torch.equal(g, g_again), "attention dropout's gradient is not reproducible"
    q, args, kwargs = _fresh_arguments(sample)
    without = torch.nn.functional.scaled_dot_product_attention(q, *args, **{**kwargs, "dropout_p": 0.0})
    assert out.shape == without.shape and out.dtype == without.dtype
    assert not torch.allclose(out, without), "dropout_p > 0 left the output unchanged"


# torch's result for these samples is one draw of a random mask, so no comparison with torch can
# pass or fail meaningfully: they are checked here by what must hold for every draw instead.
@pytest.mark.parametrize("key, sample", RANDOM_SAMPLES)
def test_random_sample(key, sample):
    if key[0] == "nn.functional.dropout":
        _dropout_sample_form(sample)
        _dropout_sample_statistics(sample)
    else:
        _attention_dropout_sample(sample)
