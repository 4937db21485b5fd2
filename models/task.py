"""What the training CLI needs from each model: one `Task` per `tritonprop train <name>`.

A task bundles its data, its model and how to score it, so that `models/train.py` can run any of
them with the same loop (progress bar, checkpoints, --resume, --amp, --clip-grad, DDP, --inspect).

Every model builder takes `layers`, the namespace its layers come from. The default is
`tritonprop.ops`; the convergence tests pass `torch.nn` to build the identical architecture on
torch's layers, copy the weights across, and compare losses step by step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


@dataclass
class Task:
    name: str
    description: str
    # load_data(data_path or None, seed, args) -> an object with whatever the task needs
    # (train/val splits, vocabularies); it raises a clear error naming the file on bad input.
    load_data: Callable[[Path | None, int, Any], Any]
    # build_model(data, layers, args) -> nn.Module built from `layers`.
    build_model: Callable[[Any, Any, Any], torch.nn.Module]
    # batches(data, batch_size, generator) -> endless iterator of training batches (tuples of tensors).
    batches: Callable[[Any, int, torch.Generator], Iterator[tuple]]
    # loss(model, batch, layers) -> scalar training loss.
    loss: Callable[[torch.nn.Module, tuple, Any], torch.Tensor]
    # evaluate(model, data, device) -> metrics dict: "accuracy" (classifiers) or "bpc" (LM),
    # and "baseline" (majority class / unigram bits per char).
    evaluate: Callable[[torch.nn.Module, Any, torch.device], dict]
    default_steps: int
    default_batch_size: int
    default_lr: float
    # artifacts(model, data, out_dir, device, metrics) -> extra PNGs / samples written to out_dir;
    # returns extra entries for metrics.json.
    artifacts: Callable[[torch.nn.Module, Any, Path, torch.device, dict], dict] | None = None
    # predict(model, data, text, device) -> printable lines, for `tritonprop predict <name> TEXT`.
    predict: Callable[[torch.nn.Module, Any, str, torch.device], list[str]] | None = None
    # Extra task-specific CLI arguments: add_arguments(argparse parser).
    add_arguments: Callable[[Any], None] | None = None
    # "kind": "classifier" or "language_model"; "smoke_args": the task's CLI arguments for a tiny
    # model (the CLI smoke tests and the CPU benchmark rows use them); "requires": the packages its
    # data comes from (the benchmark leaves the task out on a machine without them).
    tags: dict = field(default_factory=dict)
    # epoch_size(data) -> training examples in one epoch, for `--epochs`; None: len(data.train).
    epoch_size: Callable[[Any], int] | None = None
