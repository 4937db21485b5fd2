"""Every model in models/ under torch.compile(fullgraph=True), and the CNN and seq2seq under torch.export.

One training step (forward, loss, backward, Adam step) of each task's tiny model, compiled under
aot_eager and under inductor, must give the eager step's loss, gradients and updated weights.
"""
from __future__ import annotations

import copy

import pytest
import torch

from tritonprop import ops
from tritonprop.bench.cases_models import task_arguments
from tritonprop.models import registry

from helpers import TOLERANCES

AVAILABLE = registry.available()
CPU = torch.device("cpu")


def _task_or_skip(name):
    task = AVAILABLE[name]
    if isinstance(task, registry.TaskUnavailable):
        pytest.skip(str(task))
    return task


def _tiny(name):
    """The task, its smoke-size model (seeded) and one training batch."""
    task = _task_or_skip(name)
    args = task_arguments(task, CPU)
    data = task.load_data(args.data, args.seed, args)
    batch = next(task.batches(data, 3, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    return task, task.build_model(data, ops, args), batch


def _train_step(task, model, loss_fn, batch):
    """(loss, gradients, weights after one Adam step), with dropout drawn from a fixed seed."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    torch.manual_seed(3)
    loss = loss_fn(model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    return loss.detach(), grads, [p.detach().clone() for p in model.parameters()]


# Every model under aot_eager; under inductor, whose C++ compile costs 7 to 45 s a model on 2 cores,
# the CNN and the RNN classifier run by default (conv2d, batch_norm, linear, relu, rnn,
# cross_entropy) and the three Transformer/char-RNN models under -m slow.
INDUCTOR_BY_DEFAULT = {"cnn", "names"}
COMPILE_CASES = [(name, "aot_eager") for name in sorted(registry.TASKS)] + [
    pytest.param(name, "inductor", marks=() if name in INDUCTOR_BY_DEFAULT else pytest.mark.slow)
    for name in sorted(registry.TASKS)]


@pytest.mark.parametrize("name,backend", COMPILE_CASES)
def test_one_compiled_training_step_equals_eager(name, backend):
    task, model, batch = _tiny(name)
    compiled_model = copy.deepcopy(model)

    def loss_fn(model, batch):
        return task.loss(model, batch, ops)

    expected = _train_step(task, model, loss_fn, batch)
    torch._dynamo.reset()
    with torch._inductor.config.patch(fallback_random=True):
        got = _train_step(task, compiled_model, torch.compile(loss_fn, backend=backend, fullgraph=True), batch)
    tolerance = TOLERANCES[torch.float32]
    torch.testing.assert_close(got[0], expected[0], **tolerance)
    names = [n for n, _ in model.named_parameters()]
    for what, ours, theirs in (("gradient", got[1], expected[1]), ("updated weight", got[2], expected[2])):
        for param, a, b in zip(names, ours, theirs):
            torch.testing.assert_close(a, b, **tolerance, msg=lambda m: f"{name}: {what} of {param}: {m}")


@pytest.mark.parametrize("name", ["cnn", "seq2seq"])
def test_export_for_inference_round_trip(name):
    task, model, batch = _tiny(name)
    model.eval()
    inputs = tuple(batch[:1]) if name == "cnn" else tuple(batch[:2])
    with torch.no_grad():
        expected = model(*inputs)
    program = torch.export.export(model, inputs)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    # Our layers stay single nodes of the exported graph, as tritonprop ops.
    assert any(target.startswith("tritonprop.") for target in targets), targets
    with torch.no_grad():
        got = program.module()(*inputs)
    torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])
