"""The training loop every `tritonprop train <task>` runs: one loop, any `Task`.

    args = parse the CLI (add_arguments(parser, task) defines the options)
    metrics = run(task, args)

What the loop does, in order:

1. Picks the device (``--device``, default CUDA when present) and, when launched by ``torchrun``
   (``WORLD_SIZE`` > 1), joins the process group: gloo on the CPU, NCCL on CUDA.
2. Seeds everything from ``--seed``: the model's initialisation, and the batch order, which comes
   from a `torch.Generator` of its own. On the CPU, two runs with one seed give identical losses.
3. Builds the model from `tritonprop.ops` and an Adam optimizer; with ``--resume``, loads model,
   optimizer, step and RNG state from ``--out``/checkpoint.pt and fast-forwards the batch stream,
   so that the resumed run gives the same losses as an uninterrupted one.
4. Trains: every rank draws the same global batch and keeps its own slice of it; the
   DistributedDataParallel wrapper averages the gradients. ``--amp`` runs forward and loss under
   bf16 autocast; ``--clip-grad`` clips the global gradient norm. A tqdm bar shows the loss and
   samples per second.
5. Rank 0 alone writes: checkpoint.pt, metrics.json, the task's own pictures, and with
   ``--inspect`` the training-internals pictures (models/inspection.py).

The loss is the task's (`task.loss(model, batch, layers)`), evaluated on the wrapped model so
that DDP sees the forward pass; evaluation, pictures and prediction get the plain model.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from tritonprop import ops
from tritonprop.models.task import Task

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
# metrics.json's final_loss averages the training losses of the last steps, which are noisy one by one.
FINAL_LOSS_WINDOW = 20
# Options that say how to run, not what to train: they may change between a run and its --resume.
RUN_OPTIONS = {"steps", "epochs", "out", "resume", "inspect", "device", "amp", "clip_grad", "lr", "compile"}
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


class TrainingError(RuntimeError):
    """A training option that cannot work as given; the message says which and why."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser, task: Task) -> None:
    """The options of `tritonprop train <task>`: the loop's, then the task's own."""
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, default=None,
                        help=f"optimizer steps in all (default {task.default_steps}; with --resume, the total "
                             "including the steps already done)")
    length.add_argument("--epochs", type=positive_float, default=None,
                        help="passes over the training set instead of --steps (fractions allowed)")
    parser.add_argument("--batch-size", type=positive_int, default=task.default_batch_size,
                        help="examples per step, over all processes together under torchrun")
    parser.add_argument("--lr", type=positive_float, default=task.default_lr, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation, the batch order and the "
                                                             "held-out split where the data has none")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="where to train (default: cuda when present; on the CPU the kernels run under "
                             "Triton's interpreter)")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast for the forward pass and the loss: on CUDA the mixed-precision "
                             "training it is for; on the CPU it runs too (CPU autocast, interpreted bf16 kernels), "
                             "which is how it is tested, but it is slower there, not faster")
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, choices=COMPILE_BACKENDS,
                        metavar="BACKEND",
                        help="run the model under torch.compile(fullgraph=True) with BACKEND (default inductor; "
                             f"one of {', '.join(COMPILE_BACKENDS)}); the layers are single graph nodes, so a "
                             "graph break is an error")
    parser.add_argument("--clip-grad", type=positive_float, default=None, metavar="MAX_NORM",
                        help="clip the global L2 norm of the gradients to MAX_NORM before each step")
    parser.add_argument("--data", default=None,
                        help="the task's data instead of its default (see the task's description)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder: checkpoint, metrics.json, pictures (default: runs/{task.name})")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --out: model, optimizer, step and RNG state")
    parser.add_argument("--inspect", action="store_true",
                        help="also draw activation and gradient histograms, update-to-data ratios, "
                             "BatchNorm batch statistics and the gradient norm per step (PNGs in --out; the "
                             "norms also go to metrics.json as grad_norm)")
    if task.add_arguments is not None:
        task.add_arguments(parser)


def task_option_names(task: Task) -> set[str]:
    """The `dest` of every option the task adds: what defines its model and data."""
    parser = argparse.ArgumentParser(add_help=False)
    if task.add_arguments is not None:
        task.add_arguments(parser)
    return {action.dest for action in parser._actions}


# ------------------------------------------------------------------------------------------------
# Devices and processes
# ------------------------------------------------------------------------------------------------


class Distributed:
    """This process's place in a torchrun job (a job of one when not launched by torchrun)."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> float:
        """The average of a scalar over the processes."""
        if not self.enabled:
            return float(value)
        total = value.detach().float().reshape(1).clone()
        dist.all_reduce(total)
        return float(total) / self.world_size

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(requested: str | None, distributed: Distributed) -> torch.device:
    name = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device here; use --device cpu")
        device = torch.device("cuda", distributed.local_rank if distributed.enabled else torch.cuda.current_device())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def shard(batch: tuple, distributed: Distributed) -> tuple:
    """This rank's contiguous slice of a global batch (every tensor split along its first dimension)."""
    if not distributed.enabled:
        return batch
    size = next(t.shape[0] for t in batch if isinstance(t, torch.Tensor))
    if size % distributed.world_size:
        raise TrainingError(f"--batch-size {size} does not split evenly over {distributed.world_size} processes")
    per_rank = size // distributed.world_size
    start = distributed.rank * per_rank
    sliced = []
    for item in batch:
        if not isinstance(item, torch.Tensor):
            sliced.append(item)
        elif item.dim() == 0 or item.shape[0] != size:
            raise TrainingError(f"cannot split a batch element of shape {tuple(item.shape)} over processes: every "
                                f"tensor of a batch needs the batch size {size} as its first dimension")
        else:
            sliced.append(item[start: start + per_rank])
    return tuple(sliced)


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def _json_value(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def saved_options(args: argparse.Namespace) -> dict:
    """The command-line options, as plain values: what `predict` rebuilds the model and data from."""
    return {key: _json_value(value) for key, value in vars(args).items() if not callable(value)}


def save_checkpoint(path: Path, task: Task, model, optimizer, step: int, losses: list, args) -> None:
    state = {
        "task": task.name,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "losses": list(losses),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "options": saved_options(args),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from (train without --resume first)")
    return torch.load(path, map_location=device, weights_only=False)


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])


def check_resumable(checkpoint: dict, task: Task, args) -> None:
    """A checkpoint continues only the run it came from: same task, same model and data options."""
    if checkpoint["task"] != task.name:
        raise TrainingError(f"--resume: the checkpoint in {args.out} is of task {checkpoint['task']!r}, "
                            f"not {task.name!r}")
    current = saved_options(args)
    defining = (task_option_names(task) | {"data", "seed", "batch_size"}) - RUN_OPTIONS
    changed = sorted(key for key in defining if checkpoint["options"].get(key) != current.get(key))
    if changed:
        details = ", ".join(f"{key}: {checkpoint['options'].get(key)!r} then, {current.get(key)!r} now"
                            for key in changed)
        raise TrainingError(f"--resume: the options that define the model and data changed ({details}); "
                            "resume with the options of the first run")


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def total_steps(task: Task, args, data) -> int:
    if args.epochs is None:
        return args.steps or task.default_steps
    if task.epoch_size is not None:
        examples = task.epoch_size(data)
    elif hasattr(data, "train"):
        examples = len(data.train)
    else:
        raise TrainingError(f"--epochs: the {task.name} task does not say how large an epoch is; use --steps")
    return max(1, math.ceil(args.epochs * examples / args.batch_size))


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def training_step(model, optimizer, batch, task: Task, layers, *, amp: bool, clip_grad: float | None,
                  inspector=None) -> torch.Tensor:
    """Forward, loss, backward, optional clipping and the optimizer step; returns the loss (detached)."""
    device = next(model.parameters()).device
    with autocast(device, amp):
        loss = task.loss(model, batch, layers)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = None
    if clip_grad is not None:
        # Returns the global L2 norm of the gradients before clipping, and scales them in place so
        # that their norm is at most clip_grad: the optimizer step below reads the clipped ones.
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if inspector is not None:
        inspector.before_update(grad_norm)  # None: the inspector measures the norm itself
    optimizer.step()
    return loss.detach()


def _progress(steps: int, start: int, enabled: bool, name: str):
    from tqdm import tqdm

    return tqdm(total=steps, initial=start, disable=not enabled, desc=f"train {name}", unit="step",
                dynamic_ncols=True)


def run(task: Task, args: argparse.Namespace, layers=ops) -> dict:
    """Trains `task` as `args` says; returns what rank 0 writes to metrics.json (other ranks: {})."""
    distributed = Distributed()
    device = resolve_device(args.device, distributed)
    distributed.start(device)
    try:
        return _run(task, args, layers, distributed, device)
    finally:
        distributed.stop()


def _run(task: Task, args, layers, distributed: Distributed, device: torch.device) -> dict:
    out = Path(args.out if args.out is not None else Path("runs") / task.name)
    args.out = out
    seed_everything(args.seed)
    try:
        data = task.load_data(args.data, args.seed, args)
    except (OSError, ValueError) as error:  # the loaders' errors name the file and what is wrong with it
        raise TrainingError(str(error)) from error
    steps = total_steps(task, args, data)

    seed_everything(args.seed)
    model = task.build_model(data, layers, args).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    batches = task.batches(data, args.batch_size, generator)
    start, losses = 0, []
    if args.resume:
        checkpoint = load_checkpoint(out / CHECKPOINT, device)
        check_resumable(checkpoint, task, args)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = args.lr
        start, losses = checkpoint["step"], list(checkpoint["losses"])
        # Replaying the batch stream reproduces exactly the batches the first run would have drawn
        # next, whatever state the task's iterator keeps.
        for _ in range(start):
            next(batches)
        restore_rng(checkpoint["rng"])
    # Dropout masks differ between processes; the initialisation above was the same everywhere.
    if distributed.enabled:
        torch.manual_seed(args.seed + distributed.rank)

    train_model = model
    if distributed.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        if args.inspect:
            raise TrainingError("--inspect reads every layer through forward hooks, which torch.compile(fullgraph=True) "
                                "does not trace; use --inspect without --compile")
        # DDP splits a compiled graph at its gradient buckets, so fullgraph is asked for alone.
        train_model = torch.compile(train_model, backend=args.compile, fullgraph=not distributed.enabled)
    inspector = None
    if args.inspect and distributed.is_main and start < steps:
        from tritonprop.models.inspection import Inspector

        inspector = Inspector(model, start, steps - 1, clip_grad=args.clip_grad)

    model.train()
    progress = _progress(steps, start, distributed.is_main, task.name)
    began = time.perf_counter()
    for step in range(start, steps):
        batch = shard(next(batches), distributed)
        if inspector is not None:
            inspector.begin_step(step)
        loss = training_step(train_model, optimizer, batch, task, layers, amp=args.amp, clip_grad=args.clip_grad,
                             inspector=inspector)
        if inspector is not None:
            inspector.after_update(step)
        losses.append(distributed.mean(loss))
        if not math.isfinite(losses[-1]):
            raise TrainingError(f"the loss is {losses[-1]} at step {step + 1}; lower --lr or set --clip-grad")
        elapsed = time.perf_counter() - began
        progress.set_postfix(loss=f"{losses[-1]:.4f}",
                             samples_per_s=f"{(step + 1 - start) * args.batch_size / elapsed:.1f}", refresh=False)
        progress.update(1)
    progress.close()
    train_seconds = time.perf_counter() - began
    if inspector is not None:
        inspector.remove()

    metrics = {}
    if distributed.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / CHECKPOINT, task, model, optimizer, steps if start < steps else start, losses, args)
        metrics = _metrics(task, args, model, data, device, distributed, losses, steps, start, train_seconds)
        if inspector is not None:
            metrics["inspect"] = inspector.write(out)
            metrics["grad_norm"] = inspector.grad_norms
        (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    distributed.barrier()
    return metrics


def _metrics(task, args, model, data, device, distributed, losses, steps, start, train_seconds) -> dict:
    evaluation = task.evaluate(model, data, device)
    metrics = {
        "model": task.name,
        "steps": max(steps, start),
        "final_loss": float(np.mean(losses[-FINAL_LOSS_WINDOW:])) if losses else float("nan"),
        "initial_loss": losses[0] if losses else float("nan"),
        **evaluation,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "amp": args.amp,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "world_size": distributed.world_size,
        "train_seconds": train_seconds,
        "samples_per_second": (max(steps - start, 0) * args.batch_size / train_seconds) if train_seconds > 0 else None,
        "losses": losses,
    }
    if task.artifacts is not None:
        metrics.update(task.artifacts(model, data, args.out, device, metrics))
    return metrics


def load_for_prediction(task: Task, out: Path, device: torch.device, layers=ops):
    """(model, data) rebuilt from the checkpoint in `out`, with the options it was trained with."""
    checkpoint = load_checkpoint(Path(out) / CHECKPOINT, device)
    if checkpoint["task"] != task.name:
        raise TrainingError(f"{Path(out) / CHECKPOINT}: a checkpoint of task {checkpoint['task']!r}, "
                            f"not {task.name!r}")
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser, task)
    args = parser.parse_args([])
    for key, value in checkpoint["options"].items():
        setattr(args, key, value)
    data = task.load_data(args.data, args.seed, args)
    model = task.build_model(data, layers, args).to(device)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, data
