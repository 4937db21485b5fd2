"""Whole-model benchmark cases: one training step of every registered task, tritonprop vs torch.nn.

Each case is one task (models/registry.py) whose module imports. Its three implementations are the
same architecture with the same weights and the same batch:

- "tritonprop": the model built from `tritonprop.ops` (the kernels);
- "naive": that model again, run with TRITONPROP_BACKEND=reference, so that every op takes its
  naive autograd reference;
- "torch": the model built from `torch.nn` (cuDNN convolutions, SDPA attention, cuBLAS), the
  baseline.

"fwd" is the forward pass and the loss; "fwd+bwd" is a whole training step: forward, loss,
backward and the Adam update. Throughput is in samples per second. On CUDA the model and batch
are the task's defaults (its GPU configuration), in fp32 and under bf16 autocast (`--amp`); under
the interpreter each task shrinks to its smoke-test size (`tags["smoke_args"]`), batch 2, fp32.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib.util
import os
import sys
from dataclasses import dataclass

import torch

from tritonprop import backend, ops
from tritonprop.bench.case import Callables, Case
from tritonprop.models import registry, train

# The target: a training step on tritonprop at least as fast as on torch.nn (t_torch / t_ours).
TARGET = {"fwd+bwd": 1.0}
CPU_BATCH = 2


@dataclass(frozen=True)
class ModelCase(Case):
    """A Case whose work is counted in samples (the batch), not bytes or FLOPs."""

    @property
    def throughput_key(self) -> str:
        return "samples_per_s"

    @property
    def throughput_unit(self) -> str:
        return "samples/s"

    def throughput(self, mode: str, median_ms: float) -> float:
        return self.work[mode] / (median_ms * 1e-3)


def task_arguments(task, device: torch.device) -> argparse.Namespace:
    """The task's options: its defaults on CUDA, its smoke-test sizes under the interpreter."""
    parser = argparse.ArgumentParser(add_help=False)
    train.add_arguments(parser, task)
    argv = [] if device.type == "cuda" else list(task.tags.get("smoke_args", []))
    args = parser.parse_args(argv)
    if device.type != "cuda":
        args.batch_size = CPU_BATCH
    return args


@functools.lru_cache(maxsize=None)
def _data_and_batch(name: str, device_type: str):
    """Data and one training batch per task, loaded once (the names data reads Faker's lists)."""
    task = registry.load_task(name)
    args = task_arguments(task, torch.device(device_type))
    data = task.load_data(args.data, args.seed, args)
    batch = next(task.batches(data, args.batch_size, torch.Generator().manual_seed(0)))
    return args, data, batch


@contextlib.contextmanager
def reference_backend():
    """Every op routed to its naive reference for the duration (backend.selected() reads the env per call)."""
    previous = os.environ.get(backend.BACKEND_ENV)
    os.environ[backend.BACKEND_ENV] = "reference"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[backend.BACKEND_ENV]
        else:
            os.environ[backend.BACKEND_ENV] = previous


def _failing(error: Exception):
    # The report turns a raising callable into an error row: one model that does not build must
    # not cost the rows of the others.
    def fail():
        raise error
    return fail


def _build_model_step(case: Case, device: torch.device) -> Callables:
    task = registry.load_task(case.extra[0])
    amp = case.dtype == torch.bfloat16
    args, data, batch = _data_and_batch(task.name, device.type)
    batch = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in batch)

    torch.manual_seed(0)
    models = {}
    try:
        models["tritonprop"] = task.build_model(data, ops, args).to(device)
    except Exception as error:  # noqa: BLE001 (reported as this row's error)
        models["tritonprop"] = error
    try:
        theirs = task.build_model(data, torch.nn, args).to(device)
        if not isinstance(models["tritonprop"], Exception):
            theirs.load_state_dict(models["tritonprop"].state_dict())
        models["torch"] = theirs
    except Exception as error:  # noqa: BLE001
        models["torch"] = error
    models["naive"] = (copy.deepcopy(models["tritonprop"]) if not isinstance(models["tritonprop"], Exception)
                       else models["tritonprop"])
    layers_of = {"tritonprop": ops, "naive": ops, "torch": torch.nn}

    callables = {}
    for impl, model in models.items():
        if isinstance(model, Exception):
            callables[impl] = {"fwd": _failing(model), "fwd+bwd": _failing(model)}
            continue
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        layers = layers_of[impl]
        run_in = reference_backend if impl == "naive" else contextlib.nullcontext

        def forward(model=model, layers=layers, run_in=run_in):
            with run_in(), torch.no_grad(), train.autocast(device, amp):
                return task.loss(model, batch, layers)

        def step(model=model, optimizer=optimizer, layers=layers, run_in=run_in):
            with run_in():
                return train.training_step(model, optimizer, batch, task, layers, amp=amp, clip_grad=None)

        callables[impl] = {"fwd": forward, "fwd+bwd": step}
    return callables


def models_cases(device: torch.device) -> list[Case]:
    """One case per importable task (fp32; on CUDA also bf16 autocast)."""
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    cases = []
    for name, task in registry.available().items():
        if isinstance(task, Exception):
            continue
        missing = [package for package in task.tags.get("requires", ()) if importlib.util.find_spec(package) is None]
        if missing:  # the offline GPU machine has none of the demo data packages
            print(f"models: {name} left out, its data needs {', '.join(missing)}", file=sys.stderr)
            continue
        args = task_arguments(task, device)
        for dtype in dtypes:
            cases.append(ModelCase(
                op="model", label=f"{name}, batch {args.batch_size}", shape=(args.batch_size,),
                dtype=dtype, layout="autocast" if dtype == torch.bfloat16 else "plain", builder=_build_model_step,
                work={"fwd": args.batch_size, "fwd+bwd": args.batch_size}, unit="samples",
                target=TARGET, extra=(name,),
            ))
    return cases
