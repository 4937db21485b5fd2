"""The ops as torch operators: torch.compile (fullgraph), torch.func, opcheck, checkpointing.

The samples are the self-check's (tritonprop/selfcheck.py: one per registry case, so every op has
one) plus the few variants below. Each is run eagerly and compiled with ``fullgraph=True`` (so a
graph break is an error) under aot_eager and inductor, and the output and every gradient must
agree. The custom ops that the samples reach, forward and backward, are recorded as they run,
and each recorded call is checked with `torch.library.opcheck` (schema, fake implementation,
autograd registration, AOT dispatch with dynamic shapes).
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tritonprop import ops, selfcheck
from tritonprop.ops import _library

from helpers import TOLERANCES

CPU = torch.device("cpu")


def _x(*shape):
    return torch.randn(*shape)


# Variants the self-check samples leave out: in-place ReLU, probability targets, an RNN without bias.
VARIANTS = {
    "relu in place": selfcheck.Sample(lambda x: ops.relu(x * 1.0, inplace=True), None, [_x(3, 7)], [0]),
    "cross_entropy, probabilities": selfcheck.Sample(
        lambda x, t: ops.cross_entropy(x, t, label_smoothing=0.1), None,
        [_x(5, 7), torch.rand(5, 7).softmax(1)], [0, 1]),
    "rnn without bias": selfcheck.Sample(
        lambda x, w_ih, w_hh, w_ih_r, w_hh_r: ops.rnn(x, None, [w_ih, w_hh, w_ih_r, w_hh_r], bias=False,
                                                      bidirectional=True)[0],
        None, [_x(3, 2, 3), _x(4, 3), _x(4, 4), _x(4, 3), _x(4, 4)], [0, 1, 2, 3, 4]),
}


def _samples() -> dict:
    samples = {label: case(CPU) for label, case in selfcheck.CASES.items()}
    samples.update(VARIANTS)
    return samples


SAMPLES = _samples()


def _output_and_grads(fn, sample):
    leaves = [t.detach().clone().requires_grad_(k in sample.grad_of) for k, t in enumerate(sample.tensors)]
    torch.manual_seed(1)  # dropout's seed
    out = fn(*leaves)
    loss = (out.float() * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
    return [out, *torch.autograd.grad(loss, [leaves[k] for k in sample.grad_of])]


# inductor compiles C++ for every graph (3 to 20 s each on 2 cores): per op it runs under -m slow;
# the models' inductor steps in the default run (tests/test_compile_models.py) cover it there.
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
@pytest.mark.parametrize("label", sorted(SAMPLES))
def test_compiles_with_fullgraph_and_matches_eager(label, backend):
    sample = SAMPLES[label]
    expected = _output_and_grads(sample.ours, sample)
    torch._dynamo.reset()
    # inductor draws random numbers its own way unless told to call torch's generator as eager does.
    with torch._inductor.config.patch(fallback_random=True):
        got = _output_and_grads(torch.compile(sample.ours, backend=backend, fullgraph=True), sample)
    for k, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, **TOLERANCES[torch.float32], msg=lambda m: f"{label}, result {k}: {m}")


class _RecordOps(TorchDispatchMode):
    """Records the first call of each tritonprop:: op, with its arguments, as the case runs."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == _library.NAMESPACE and func not in self.calls:
            clone = lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t  # noqa: E731
            self.calls[func] = (torch.utils._pytree.tree_map(clone, args), kwargs)
        return func(*args, **kwargs)


def _recorded_calls():
    """Every tritonprop op the samples reach, forward and backward, with real arguments."""
    recorder = _RecordOps()
    with recorder:
        for sample in SAMPLES.values():
            _output_and_grads(sample.ours, sample)
    return recorder.calls


@pytest.fixture(scope="module")
def recorded_calls():
    return _recorded_calls()


def test_the_cases_reach_every_custom_op(recorded_calls):
    registered = {name for name in torch.ops.tritonprop}
    reached = {func._opname for func in recorded_calls}
    assert registered - reached == set()


@pytest.mark.parametrize("name", sorted(torch.ops.tritonprop))
def test_opcheck(name, recorded_calls):
    calls = {func._opname: call for func, call in recorded_calls.items()}
    args, kwargs = calls[name]
    if name not in _library.NOT_DIFFERENTIABLE:
        # Its registered gradient is checked too (AOT dispatch differentiates the op).
        args = [a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    torch.library.opcheck(getattr(torch.ops.tritonprop, name).default, args, kwargs)


# ------------------------------------------------------------------------------------------------
# torch.func
# ------------------------------------------------------------------------------------------------

# Small inputs of their own: jacrev under the interpreter costs one backward per output element.
FUNC_CASES = {
    "layer_norm": (lambda x, w, b: ops.layer_norm(x, (6,), w, b), lambda: (_x(2, 3, 6), _x(6) + 1, _x(6))),
    "linear": (lambda x, w, b: ops.linear(x, w, b, activation="relu"), lambda: (_x(2, 5), _x(4, 5), _x(4))),
    "conv2d": (lambda x, w: ops.conv2d(x, w, stride=2, padding=1, activation="gelu"),
               lambda: (_x(1, 2, 4, 5), _x(3, 2, 3, 3))),
    "gelu": (lambda x: ops.gelu(x, approximate="tanh"), lambda: (_x(3, 7),)),
    "log_softmax": (lambda x: ops.log_softmax(x, dim=1), lambda: (_x(3, 6),)),
    "cross_entropy": (lambda x, t: ops.cross_entropy(x, t), lambda: (_x(5, 7), torch.rand(5, 7).softmax(1))),
    "scaled_dot_product_attention": (lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=True),
                                     lambda: (_x(1, 2, 5, 8), _x(1, 2, 5, 8), _x(1, 2, 5, 8))),
    "rnn": (lambda x, w_ih, w_hh: ops.rnn(x, None, [w_ih, w_hh], bias=False)[0],
            lambda: (_x(3, 2, 3), _x(4, 3), _x(4, 4))),
}


@pytest.mark.parametrize("op", sorted(FUNC_CASES))
def test_torch_func_grad_matches_autograd(op):
    fn, build = FUNC_CASES[op]
    first, *rest = build()

    def loss(x):
        return fn(x, *rest).float().square().sum()

    got = torch.func.grad(loss)(first)
    leaf = first.clone().requires_grad_()
    expected, = torch.autograd.grad(loss(leaf), leaf)
    torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("op", ["layer_norm", "linear", "gelu", "log_softmax"])
def test_torch_func_vmap_and_jacrev(op):
    fn, build = FUNC_CASES[op]
    first, *rest = build()
    batch = torch.stack([first, first * 2 - 1])
    mapped = torch.func.vmap(lambda x: fn(x, *rest))(batch)
    torch.testing.assert_close(mapped, torch.stack([fn(x, *rest) for x in batch]), **TOLERANCES[torch.float32])
    jacobian = torch.func.jacrev(lambda x: fn(x, *rest))(first)
    expected = torch.autograd.functional.jacobian(lambda x: fn(x, *rest), first)
    torch.testing.assert_close(jacobian, expected, **TOLERANCES[torch.float32])


def test_torch_func_double_grad_of_layer_norm():
    """grad of grad: the backward's differentiable form runs under the transform too."""
    w, b = torch.rand(6) + 0.5, torch.randn(6)
    x = torch.randn(2, 6, dtype=torch.float64)
    w, b = w.double(), b.double()

    def penalty(fn):
        return lambda x: torch.func.grad(lambda x: fn(x, (6,), w, b).pow(3).sum())(x).square().sum()

    got = torch.func.grad(penalty(ops.layer_norm))(x)
    expected = torch.func.grad(penalty(torch.nn.functional.layer_norm))(x)
    torch.testing.assert_close(got, expected, **TOLERANCES[torch.float64])


# ------------------------------------------------------------------------------------------------
# Checkpointing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpoint_gives_the_same_gradients(use_reentrant):
    block = torch.nn.Sequential(ops.Linear(6, 8, activation="gelu"), ops.LayerNorm(8), ops.Dropout(0.25),
                                ops.Linear(8, 3))
    x = torch.randn(4, 6, requires_grad=True)

    def run(checkpointed):
        torch.manual_seed(2)
        x.grad = None
        block.zero_grad(set_to_none=True)
        if checkpointed:
            out = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=use_reentrant)
        else:
            out = block(x)
        out.square().sum().backward()
        return [x.grad, *(p.grad for p in block.parameters())]

    for got, expected in zip(run(True), run(False)):
        torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])
