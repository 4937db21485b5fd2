"""The ops as torch operators: torch.compile (fullgraph), torch.func, opcheck, checkpointing.

Every public functional has one small case below (a test fails when the registry gains an op
without one). Each case is run eagerly and compiled with ``fullgraph=True`` (so a graph break is
an error) under aot_eager and inductor, and the loss and every gradient must agree. The custom
ops that the cases reach, forward and backward, are recorded as they run, and each recorded call
is checked with `torch.library.opcheck` (schema, fake implementation, autograd registration,
AOT dispatch with dynamic shapes).
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tritonprop import ops, registry
from tritonprop.ops import _library

from helpers import TOLERANCES


def _x(*shape, requires_grad=True):
    return torch.randn(*shape, requires_grad=requires_grad)


def _param(*shape):
    return (torch.rand(*shape) + 0.5).requires_grad_()


# op -> (callable of tensors returning a tensor, a builder of its tensors). Small shapes: every
# kernel runs under the interpreter.
CASES = {
    "conv2d": (lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=1, activation="gelu"),
               lambda: (_x(2, 3, 5, 6).to(memory_format=torch.channels_last), _x(4, 3, 3, 3), _x(4))),
    "batch_norm": (lambda x, w, b: ops.batch_norm(x, torch.zeros(3), torch.ones(3), w, b, training=True),
                   lambda: (_x(4, 3, 2, 3), _param(3), _x(3))),
    "layer_norm": (lambda x, w, b: ops.layer_norm(x, (6,), w, b), lambda: (_x(2, 3, 6), _param(6), _x(6))),
    "linear": (lambda x, w, b: ops.linear(x, w, b, activation="relu"), lambda: (_x(2, 3, 5), _x(4, 5), _x(4))),
    "relu": (lambda x: ops.relu(x * 1.0, inplace=True), lambda: (_x(3, 7),)),
    "gelu": (lambda x: ops.gelu(x, approximate="tanh"), lambda: (_x(3, 7),)),
    "dropout": (lambda x: ops.dropout(x, 0.5), lambda: (_x(4, 9),)),
    "cross_entropy": (lambda x, t: ops.cross_entropy(x, t.argmax(1), label_smoothing=0.1) + ops.cross_entropy(x, t),
                      lambda: (_x(5, 7), torch.rand(5, 7).softmax(1).requires_grad_())),
    "log_softmax": (lambda x: ops.log_softmax(x, dim=1), lambda: (_x(3, 6),)),
    "nll_loss": (lambda x: ops.nll_loss(x, torch.tensor([0, 2, 4]), reduction="sum"), lambda: (_x(3, 6),)),
    "scaled_dot_product_attention": (
        lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=True),
        lambda: (_x(1, 2, 5, 8), _x(1, 2, 5, 8), _x(1, 2, 5, 8))),
    "rnn_cell": (lambda x, h, w_ih, w_hh: ops.rnn_cell(x, h, w_ih, w_hh),
                 lambda: (_x(2, 3), _x(2, 4), _x(4, 3), _x(4, 4))),
    "rnn": (lambda x, w_ih, w_hh, w_ih_r, w_hh_r: ops.rnn(x, None, [w_ih, w_hh, w_ih_r, w_hh_r], bias=False,
                                                          bidirectional=True)[0],
            lambda: (_x(3, 2, 3), _x(4, 3), _x(4, 4), _x(4, 3), _x(4, 4))),
}


def _loss_and_grads(fn, tensors):
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
    torch.manual_seed(1)  # dropout's seed
    out = fn(*leaves)
    loss = (out.float() * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
    wanted = [t for t in leaves if t.requires_grad]
    return [out, *torch.autograd.grad(loss, wanted)]


def test_every_registered_op_has_a_case():
    assert set(CASES) == set(registry.OPS)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("op", sorted(CASES))
def test_compiles_with_fullgraph_and_matches_eager(op, backend):
    fn, build = CASES[op]
    tensors = build()
    expected = _loss_and_grads(fn, tensors)
    torch._dynamo.reset()
    # inductor draws random numbers its own way unless told to call torch's generator as eager does.
    with torch._inductor.config.patch(fallback_random=True):
        got = _loss_and_grads(torch.compile(fn, backend=backend, fullgraph=True), tensors)
    for k, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, **TOLERANCES[torch.float32], msg=lambda m: f"{op}, result {k}: {m}")


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
    """Every tritonprop op the cases reach, first order and under create_graph, with real arguments."""
    recorder = _RecordOps()
    with recorder:
        for fn, build in CASES.values():
            _loss_and_grads(fn, build())
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

FUNC_OPS = ["layer_norm", "linear", "conv2d", "gelu", "cross_entropy", "scaled_dot_product_attention", "rnn"]


@pytest.mark.parametrize("op", FUNC_OPS)
def test_torch_func_grad_matches_autograd(op):
    fn, build = CASES[op]
    tensors = [t.detach() for t in build()]
    first = tensors[0]

    def loss(x):
        torch.manual_seed(1)
        return fn(x, *tensors[1:]).float().square().sum()

    got = torch.func.grad(loss)(first)
    leaf = first.clone().requires_grad_()
    expected, = torch.autograd.grad(loss(leaf), leaf)
    torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("op", ["layer_norm", "linear", "gelu", "log_softmax"])
def test_torch_func_vmap_and_jacrev(op):
    fn, build = CASES[op]
    tensors = [t.detach() for t in build()]
    batch = torch.stack([tensors[0], tensors[0] * 2 - 1])
    mapped = torch.func.vmap(lambda x: fn(x, *tensors[1:]))(batch)
    torch.testing.assert_close(mapped, torch.stack([fn(x, *tensors[1:]) for x in batch]),
                               **TOLERANCES[torch.float32])
    jacobian = torch.func.jacrev(lambda x: fn(x, *tensors[1:]))(tensors[0])
    expected = torch.autograd.functional.jacobian(lambda x: fn(x, *tensors[1:]), tensors[0])
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
