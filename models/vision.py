"""Any torchvision classification model, by name, converted to tritonprop's kernels; it classifies handwritten digits.

    digits [B, 1, h, w] -> resized to --image-size, gray channel replicated to RGB [B, 3, S, S]
                        -> torchvision.models.get_model(--arch, num_classes=10), after ops.convert
                        -> 10 logits

The network is torchvision's own, built untrained (no weights are downloaded) and converted in
place by `ops.convert`: its Conv2d, BatchNorm2d, Linear, ReLU, GELU, Dropout, LayerNorm and
MultiheadAttention layers run on our kernels; what we do not implement (pooling, ReLU6, Hardswish,
SiLU, ...) stays torch's. Built with ``layers=torch.nn`` it is left unconverted: the twin that the
convergence test and the benchmark compare against. The data are the CNN's (models/data_mnist.py),
resized inside the model, on its device, so a batch crosses to the GPU at 28x28. Activations and
conv weights are channels_last: the layout of the fastest bf16 convolutions on the GPU, and under
the interpreter a quarter quicker than NCHW. The loss is `layers.CrossEntropyLoss`.

    tritonprop train vision                                # resnet18 at 32x32 on 5,000 MNIST digits
    tritonprop train vision --arch mobilenet_v3_small --width-mult 0.5 --image-size 64
    tritonprop train vision --arch mobilenet_v2 --width-mult 0.25 --blocks 1,1 --image-size 8 \\
        --data digits8x8                                   # a CPU-sized run: seconds per step

Under the interpreter each step is Python work per program: torchvision's widths are fixed by the
architecture, so on a CPU take a few blocks and small images (a one-block-per-stage resnet,
`--arch resnet18 --blocks 1,1,1,1 --image-size 16`, takes about 12 s a step of batch 2 on 2 cores).
"""
from __future__ import annotations

import argparse
import difflib
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from tritonprop import ops
from tritonprop.models import cnn, data_mnist
from tritonprop.models.task import Task

# The torchvision import takes about two seconds, and every `tritonprop` command imports every task
# module, so it waits until a model is built; a machine without torchvision still lists the task as
# unavailable, with this reason.
if importlib.util.find_spec("torchvision") is None:
    raise ImportError("the vision task needs torchvision: pip install torchvision (requirements-dev.txt)")

DEFAULTS = dict(arch="resnet18", image_size=32, width_mult=None, blocks=None)
# The plain resnets, and the block each stage of theirs is made of (--blocks rebuilds them).
RESNET_BLOCKS = {"resnet18": "BasicBlock", "resnet34": "BasicBlock", "resnet50": "Bottleneck",
                 "resnet101": "Bottleneck", "resnet152": "Bottleneck"}
# torchvision's default MobileNetV2 stages, the paper's table 2: (expansion t, channels c, blocks
# n, first stride s). torchvision does not export it; --blocks replaces the n of the first stages.
MOBILENET_V2_STAGES = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                       [6, 320, 1, 1]]
# The builders that take a channel multiplier, width_mult (mnasnet's is in its name: mnasnet0_5).
WIDTH_MULT_ARCHS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
# Built without their auxiliary classifiers: with them, training returns three sets of logits, and
# the loss scores one.
AUXILIARY_HEAD_ARCHS = ("googlenet", "inception_v3")


def torchvision_module():
    from tritonprop.torchvision_import import import_torchvision

    return import_torchvision()


def classification_models() -> list[str]:
    tv = torchvision_module()
    return tv.models.list_models(module=tv.models)


def architecture(text: str) -> str:
    """--arch: a classification model of torchvision.models, by its builder's name."""
    known = classification_models()
    if text in known:
        return text
    close = difflib.get_close_matches(text, known, n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise argparse.ArgumentTypeError(
        f"unknown torchvision classification model {text!r}{hint}; choose one of the {len(known)} of "
        "torchvision.models.list_models(module=torchvision.models), e.g. resnet18, resnet50, mobilenet_v2, "
        "mobilenet_v3_small, efficientnet_b0, vit_b_16")


def add_arguments(parser) -> None:
    from tritonprop.models.train import positive_float, positive_int

    parser.add_argument("--arch", type=architecture, default=DEFAULTS["arch"],
                        help="the torchvision classification model, by its builder's name (resnet18, "
                             "mobilenet_v2, efficientnet_b0, vit_b_16, ...; torchvision.models.list_models())")
    parser.add_argument("--image-size", type=positive_int, default=DEFAULTS["image_size"],
                        help="side in pixels the digits are resized to; it must suit --arch (inception_v3 "
                             "needs at least 75; vit_* models are built for this size)")
    parser.add_argument("--width-mult", type=positive_float, default=DEFAULTS["width_mult"],
                        help=f"channel multiplier of {', '.join(WIDTH_MULT_ARCHS)} (default: the "
                             "architecture's own, 1.0); e.g. 0.25 for a CPU-sized run")
    parser.add_argument("--blocks", type=cnn._int_list, default=DEFAULTS["blocks"],
                        help="blocks in each stage, comma-separated (default: the architecture's own): "
                             f"four numbers for {', '.join(RESNET_BLOCKS)} (e.g. 1,1,1,1); for mobilenet_v2 "
                             "one to seven, and a shorter list keeps only the first stages (e.g. 1,1)")


def option(args, name: str):
    return getattr(args, name, DEFAULTS[name]) if args is not None else DEFAULTS[name]


def builder_options(arch: str, image_size: int, width_mult: float | None, blocks: tuple[int, ...] | None) -> dict:
    """The keyword arguments of torchvision's builder of `arch`; ValueError naming the option that
    `arch` has no use for."""
    extra = {}
    if width_mult is not None:
        if arch not in WIDTH_MULT_ARCHS:
            raise ValueError(f"--width-mult: --arch {arch} has no channel multiplier; only "
                             f"{', '.join(WIDTH_MULT_ARCHS)} do")
        extra["width_mult"] = width_mult
    if blocks is not None:
        if arch in RESNET_BLOCKS:
            if len(blocks) != 4:
                raise ValueError(f"--blocks: a resnet has 4 stages, got {len(blocks)} numbers")
        elif arch == "mobilenet_v2":
            if len(blocks) > len(MOBILENET_V2_STAGES):
                raise ValueError(f"--blocks: mobilenet_v2 has {len(MOBILENET_V2_STAGES)} stages, got "
                                 f"{len(blocks)} numbers")
            extra["inverted_residual_setting"] = [[t, c, n, s] for (t, c, _, s), n in
                                                  zip(MOBILENET_V2_STAGES, blocks)]
        else:
            raise ValueError(f"--blocks: only {', '.join(RESNET_BLOCKS)} and mobilenet_v2 take it, not --arch {arch}")
    if arch in AUXILIARY_HEAD_ARCHS:
        extra["aux_logits"] = False
    if arch.startswith("vit_"):
        extra["image_size"] = image_size
    return extra


def torchvision_network(arch: str, image_size: int, width_mult=None, blocks=None,
                        classes: int = data_mnist.NUM_CLASSES) -> torch.nn.Module:
    """torchvision's `arch`, untrained, on torch.nn layers."""
    extra = builder_options(arch, image_size, width_mult, blocks)
    tv = torchvision_module()
    if blocks is not None and arch in RESNET_BLOCKS:
        block = getattr(tv.models.resnet, RESNET_BLOCKS[arch])
        return tv.models.resnet.ResNet(block, list(blocks), num_classes=classes, **extra)
    return tv.models.get_model(arch, num_classes=classes, **extra)


class DigitClassifier(torch.nn.Module):
    """A torchvision network fed digits: each batch is resized and made RGB where the network runs."""

    def __init__(self, arch: str, network: torch.nn.Module, image_size: int):
        super().__init__()
        self.arch = arch
        self.network = network.to(memory_format=torch.channels_last)
        self.image_size = image_size

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        if digits.shape[-2:] != (self.image_size, self.image_size):
            digits = F.interpolate(digits, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        # expand is a view; the copy gives the network three real channels in its weights' layout.
        images = digits.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)
        return self.network(images)


def load_data(data_path: Path | None, seed: int, args) -> data_mnist.DigitsData:
    # The options are checked here, before any data is read: the loop reports the ValueErrors of
    # load_data as command-line errors, and build_model raises the same ones later.
    builder_options(option(args, "arch"), option(args, "image_size"), option(args, "width_mult"),
                    option(args, "blocks"))
    return data_mnist.load(data_path, seed)


def build_model(data: data_mnist.DigitsData, layers, args) -> DigitClassifier:
    arch, image_size = option(args, "arch"), option(args, "image_size")
    network = torchvision_network(arch, image_size, option(args, "width_mult"), option(args, "blocks"))
    if layers is ops:
        ops.convert(network)
    return DigitClassifier(arch, network, image_size)


def evaluate(model: DigitClassifier, data: data_mnist.DigitsData, device) -> dict:
    return {**cnn.evaluate(model, data, device), "arch": model.arch, "image_size": model.image_size}


TASK = Task(
    name="vision",
    description="any torchvision classification model (--arch), converted by ops.convert: handwritten digits "
                "(the CNN's data, resized to --image-size, as RGB)",
    load_data=load_data,
    build_model=build_model,
    batches=cnn.batches,
    loss=cnn.loss,
    evaluate=evaluate,
    default_steps=1000,
    default_batch_size=64,
    default_lr=1e-3,
    add_arguments=add_arguments,
    # The smoke size keeps the 8x8 digits at 8x8. Resized, they would differ in the last bit between
    # eager and torch.compile (aot_eager's bilinear interpolation), and the compile test's Adam step
    # magnifies that in the biases of the BatchNorms that end MobileNetV2's blocks: a conv and a
    # BatchNorm follow each, so their gradient is zero but for rounding.
    tags={"requires": ("mlxtend", "sklearn"), "kind": "classifier",
          "smoke_args": ["--data", "digits8x8", "--arch", "mobilenet_v2", "--width-mult", "0.25", "--blocks", "1,1",
                         "--image-size", "8"]},
    epoch_size=lambda data: len(data.train_y),
)
