"""The CNN on tritonprop's kernels trains exactly like the same CNN on torch.nn.

Both twins start from the same weights and see the same batches; their losses, step by step, and
their weights at the end must agree within the fp32 tolerance. Tiny sizes: under the interpreter
every kernel launch costs milliseconds.
"""
from __future__ import annotations

import pytest
import torch

from helpers import assert_close, require_demo_packages, task_losses
from tritonprop import ops
from tritonprop.models import cnn, data_mnist

require_demo_packages()

STEPS = 10
BATCH = 8
WIDTHS, STRIDES = (4, 8), (2, 2)


@pytest.fixture(scope="module")
def digits():
    return data_mnist.load("digits8x8", seed=0)


def twins(data):
    torch.manual_seed(0)
    ours = cnn.CNN(data.image_size, 10, WIDTHS, STRIDES, ops)
    theirs = cnn.CNN(data.image_size, 10, WIDTHS, STRIDES, torch.nn)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def train_steps(model, layers, data, steps):
    return task_losses(cnn.TASK, model, layers, data, BATCH, steps, torch.optim.Adam(model.parameters(), lr=1e-2))


def test_layers_come_from_the_namespace(digits):
    ours, theirs = twins(digits)
    kinds = {type(m) for m in ours.modules()}
    assert {ops.Conv2d, ops.BatchNorm2d, ops.ReLU, ops.Linear} <= kinds
    assert not {torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear} & kinds
    assert torch.nn.Conv2d in {type(m) for m in theirs.modules()}


def test_losses_match_torch_nn_step_by_step(digits):
    ours, theirs = twins(digits)
    our_losses = train_steps(ours, ops, digits, STEPS)
    their_losses = train_steps(theirs, torch.nn, digits, STEPS)
    assert_close(our_losses, their_losses, name="losses")
    # It learns: the loss of the last steps is below that of the first ones.
    assert their_losses[-3:].mean() < their_losses[:3].mean()
    for (name, ours_p), theirs_p in zip(ours.state_dict().items(), theirs.state_dict().values()):
        if ours_p.is_floating_point():
            assert_close(ours_p, theirs_p, name=name)
    # Eval mode (running statistics) gives the same logits too.
    ours.eval(), theirs.eval()
    with torch.no_grad():
        assert_close(ours(digits.val_x[:16]), theirs(digits.val_x[:16]), name="eval logits")


def test_default_architecture_on_28x28():
    model = cnn.CNN(28, 10, cnn.DEFAULTS["widths"], cnn.DEFAULTS["strides"], torch.nn)
    # Strides 1, 2, 2: 28 -> 28 -> 14 -> 7, so the head reads 128 maps of 7x7.
    assert model.head.in_features == 128 * 7 * 7
    logits = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (2, 2)] and all(c.bias is None for c in convs)


def test_activations_are_channels_last():
    model = cnn.CNN(8, 10, WIDTHS, STRIDES, torch.nn)
    seen = []
    model.features[1].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    model(torch.randn(2, 1, 8, 8))
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


def test_widths_and_strides_must_pair():
    with pytest.raises(ValueError, match="--widths has 2 blocks but --strides has 3"):
        cnn.CNN(8, 10, (4, 8), (1, 2, 2), torch.nn)


def test_majority_baseline_and_accuracy(digits):
    model = cnn.CNN(digits.image_size, 10, WIDTHS, STRIDES, torch.nn)
    metrics = cnn.evaluate(model, digits, torch.device("cpu"))
    majority = int(torch.bincount(digits.train_y).argmax())
    assert metrics["baseline"] == pytest.approx(float((digits.val_y == majority).float().mean()))
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["val_images"] == len(digits.val_y)
