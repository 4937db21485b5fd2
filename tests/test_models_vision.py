"""A torchvision model converted by `ops.convert` trains exactly like the same model left on torch.nn.

The `vision` task's network is torchvision's own; built with `layers=tritonprop.ops` it is
converted, with `layers=torch.nn` it is not. Both twins start from the same weights and see the
same batches; their losses, step by step, and their weights at the end must agree within the fp32
tolerance. The twin is a reduced MobileNetV2 (width 0.25, one block in each of its first two
stages) at 16x16, a few seconds a step under the interpreter; torchvision's resnets, whose widths
are fixed, are checked layer by layer against torch in tests/test_convert_models.py.
"""
from __future__ import annotations

import argparse

import pytest
import torch

from helpers import assert_close, require_demo_packages, task_losses
from tritonprop import ops
from tritonprop.models import data_mnist

require_demo_packages()
vision = pytest.importorskip("tritonprop.models.vision", reason="the vision task needs torchvision",
                             exc_type=ImportError)

STEPS = 3
BATCH = 4
REDUCED = ["--arch", "mobilenet_v2", "--width-mult", "0.25", "--blocks", "1,1", "--image-size", "16"]


def options(argv):
    parser = argparse.ArgumentParser()
    vision.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def digits():
    return data_mnist.load("digits8x8", seed=0)


def twins(data):
    torch.manual_seed(0)
    theirs = vision.build_model(data, torch.nn, options(REDUCED))
    ours = vision.build_model(data, ops, options(REDUCED))
    ours.load_state_dict(theirs.state_dict())
    # The two Dropout layers draw different masks; the comparison is of everything else.
    for model in (ours, theirs):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return ours, theirs


def train_steps(model, layers, data, steps):
    return task_losses(vision.TASK, model, layers, data, BATCH, steps, torch.optim.SGD(model.parameters(), lr=0.1))


def test_converted_losses_match_torch_nn_step_by_step(digits):
    ours, theirs = twins(digits)
    kinds = {type(m) for m in ours.modules()}
    assert {ops.Conv2d, ops.BatchNorm2d, ops.Linear, ops.Dropout} <= kinds
    # ReLU6 is not ours, so it stays torch's; nothing we implement does.
    assert torch.nn.ReLU6 in kinds and not {torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear} & kinds
    assert ops.Conv2d not in {type(m) for m in theirs.modules()}

    our_losses = train_steps(ours, ops, digits, STEPS)
    their_losses = train_steps(theirs, torch.nn, digits, STEPS)
    assert_close(our_losses, their_losses, name="losses")
    for (name, ours_p), theirs_p in zip(ours.state_dict().items(), theirs.state_dict().values()):
        if ours_p.is_floating_point():
            assert_close(ours_p, theirs_p, name=name)


def test_digits_reach_the_network_resized_rgb_and_channels_last(digits):
    model = vision.build_model(digits, torch.nn, options(REDUCED))
    seen = []
    model.network.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    logits = model(digits.val_x[:2])
    assert logits.shape == (2, 10)
    images = seen[0]
    assert images.shape == (2, 3, 16, 16) and images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])


def test_blocks_rebuild_a_resnet_stage_by_stage(digits):
    model = vision.build_model(digits, torch.nn, options(["--arch", "resnet34", "--blocks", "1,2,1,1"]))
    stages = [model.network.layer1, model.network.layer2, model.network.layer3, model.network.layer4]
    assert [len(stage) for stage in stages] == [1, 2, 1, 1]
    assert type(stages[0][0]).__name__ == "BasicBlock" and model.network.fc.out_features == 10


@pytest.mark.parametrize("argv, message", [
    (["--arch", "resnet18", "--width-mult", "0.5"], "--width-mult: --arch resnet18 has no channel multiplier"),
    (["--arch", "resnet18", "--blocks", "1,1"], "--blocks: a resnet has 4 stages, got 2 numbers"),
    (["--arch", "vgg11", "--blocks", "1,1"], "--blocks: only resnet18, .* and mobilenet_v2 take it, not --arch vgg11"),
])
def test_options_an_architecture_has_no_use_for_are_refused(digits, argv, message):
    with pytest.raises(ValueError, match=message):
        vision.build_model(digits, torch.nn, options(argv))
