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

Beside the tasks, two existing torch models are timed as they are converted (`ops.convert`):
"tritonprop" is the model after conversion, "naive" that converted model on the references, and
"torch" the very same model unconverted. On CUDA these are torchvision's resnet18 (the
BENCHMARKS.md target) and a `torch.nn.Transformer`, each under bf16 autocast; under the
interpreter, tiny stand-ins in fp32. The resnet18 row needs torchvision, which the offline GPU
machine does not have: there it is left out, with the reason, and only the Transformer runs.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from tritonprop import backend, ops
from tritonprop.bench.case import Callables, Case, seeded_generator
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
    """One case per importable task (fp32; on CUDA also bf16 autocast), then the converted torch models."""
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
    for case, reason in converted_model_cases(device):
        if reason is None:
            cases.append(case)
        else:
            print(f"models: {case.label} left out, {reason}", file=sys.stderr)
    return cases


# ------------------------------------------------------------------------------------------------
# Existing torch models, converted
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertedModel:
    """One existing torch model and a batch for it, at one size."""

    label: str
    batch: int
    # build(generator, device) -> (the torch.nn model, its inputs, the class targets of its logits)
    build: Callable[[torch.Generator, torch.device], tuple[torch.nn.Module, tuple, torch.Tensor]]
    channels_last: bool = False  # images and conv weights
    needs_torchvision: bool = False


def _torchvision_classifier(arch: str, batch: int, side: int, classes: int, width_mult=None, blocks=None):
    def build(generator, device):
        from tritonprop.models import vision

        model = vision.torchvision_network(arch, side, width_mult, blocks, classes=classes).to(device)
        images = torch.randn(batch, 3, side, side, generator=generator, device=device)
        return model, (images,), torch.randint(0, classes, (batch,), generator=generator, device=device)
    return build


class TokensToTokens(torch.nn.Module):
    """`torch.nn.Transformer` between a token embedding and a vocabulary head, decoding causally."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.transformer = torch.nn.Transformer(d_model, heads, layers, layers, dim_feedforward=4 * d_model,
                                                batch_first=True)
        self.head = torch.nn.Linear(d_model, vocab)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        causal = torch.nn.Transformer.generate_square_subsequent_mask(target.shape[1], device=target.device)
        decoded = self.transformer(self.embed(source), self.embed(target), tgt_mask=causal, tgt_is_causal=True)
        return self.head(decoded)


def _transformer(vocab: int, d_model: int, heads: int, layers: int, batch: int, length: int):
    def build(generator, device):
        def tokens():
            return torch.randint(0, vocab, (batch, length), generator=generator, device=device)
        return TokensToTokens(vocab, d_model, heads, layers).to(device), (tokens(), tokens()), tokens()
    return build


# device type -> the models. The resnet18 row is BENCHMARKS.md's (batch 64, 224x224, bf16
# autocast, channels_last; target: at least as fast as unconverted on cuDNN). Its stand-in under
# the interpreter is the vision task's smoke network (models/vision.py): even a one-block-per-stage
# resnet takes about 12 s a step there, and a CPU run only shows that the rows run. The
# Transformer's shape is ours, not BENCHMARKS.md's: the base model of "Attention Is All You Need"
# (d_model 512, 8 heads, 6+6 layers, FFN 2048) on batch 32 of 128 tokens, with a 32,000-token
# vocabulary (BENCHMARKS.md's cross-entropy width).
CONVERTED_MODELS = {
    "cuda": [
        ConvertedModel("converted resnet18, batch 64, 3x224x224", 64,
                       _torchvision_classifier("resnet18", 64, 224, 1000), channels_last=True, needs_torchvision=True),
        ConvertedModel("converted nn.Transformer d512 8 heads 6+6 layers, batch 32, seq 128", 32,
                       _transformer(32000, 512, 8, 6, 32, 128)),
    ],
    "cpu": [
        ConvertedModel("converted mobilenet_v2 x0.25 blocks 1,1 (resnet18 stand-in), batch 2, 3x8x8", 2,
                       _torchvision_classifier("mobilenet_v2", 2, 8, 10, width_mult=0.25, blocks=(1, 1)),
                       channels_last=True, needs_torchvision=True),
        ConvertedModel("converted nn.Transformer d16 2 heads 1+1 layers, batch 2, seq 5", 2,
                       _transformer(11, 16, 2, 1, 2, 5)),
    ],
}


def torchvision_missing() -> str | None:
    """Why torchvision's models cannot be built here, or None when they can."""
    from tritonprop.torchvision_import import import_torchvision

    try:
        import_torchvision()
    except ImportError as error:
        return f"it needs torchvision ({error}); the offline GPU machine has none"
    return None


def _converted_models(spec: ConvertedModel, device: torch.device):
    """(the three models, their inputs, the targets): the torch model, and a converted copy of it twice."""
    torch.manual_seed(0)
    theirs, inputs, targets = spec.build(seeded_generator(device), device)
    if spec.channels_last:
        theirs = theirs.to(memory_format=torch.channels_last)
        inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
    with warnings.catch_warnings():
        # A layer that stays torch's does so in every row alike; the timing needs no warning of it.
        warnings.simplefilter("ignore")
        ours = ops.convert(copy.deepcopy(theirs))
    return {"tritonprop": ours, "naive": copy.deepcopy(ours), "torch": theirs}, inputs, targets


def _build_converted_step(case: Case, device: torch.device) -> Callables:
    amp = case.dtype == torch.bfloat16
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the cuDNN baseline of BENCHMARKS.md picks its best algorithm
    layers_of = {"tritonprop": ops, "naive": ops, "torch": torch.nn}
    try:
        models, inputs, targets = _converted_models(case.extra[0], device)
    except Exception as error:  # noqa: BLE001 (reported as this row's error)
        return {impl: {"fwd": _failing(error), "fwd+bwd": _failing(error)} for impl in layers_of}

    callables = {}
    for impl, model in models.items():
        model.train()
        optimizer = torch.optim.Adam(model.parameters())
        criterion = layers_of[impl].CrossEntropyLoss()
        run_in = reference_backend if impl == "naive" else contextlib.nullcontext

        def loss(model=model, criterion=criterion):
            with train.autocast(device, amp):
                return criterion(model(*inputs).flatten(0, -2), targets.flatten())

        def forward(loss=loss, run_in=run_in):
            with run_in(), torch.no_grad():
                return loss()

        def step(loss=loss, optimizer=optimizer, run_in=run_in):
            with run_in():
                value = loss()
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                return value.detach()

        callables[impl] = {"fwd": forward, "fwd+bwd": step}
    return callables


def converted_model_cases(device: torch.device) -> list[tuple[Case, str | None]]:
    """Each converted model's case (bf16 autocast on CUDA, fp32 under the interpreter), with why it
    cannot run here, or None."""
    amp = device.type == "cuda"
    results = []
    for spec in CONVERTED_MODELS["cuda" if amp else "cpu"]:
        layout = ", ".join(["autocast"] * amp + ["channels_last"] * spec.channels_last) or "plain"
        case = ModelCase(
            op="model", label=spec.label, shape=(spec.batch,), dtype=torch.bfloat16 if amp else torch.float32,
            layout=layout, builder=_build_converted_step, work={"fwd": spec.batch, "fwd+bwd": spec.batch},
            unit="samples", target=TARGET, extra=(spec,),
        )
        results.append((case, torchvision_missing() if spec.needs_torchvision else None))
    return results
