"""What is benchmarked: one `Case` per shape, dtype and layout, each able to build its callables.

    for case in cases_for(["batch_norm"], device):
        fns = case.build(device)               # {impl: {mode: zero-argument callable}}
        fns["tritonprop"]["fwd+bwd"]()

Every op benchmarks three implementations: "tritonprop" (our kernels), "naive" (the autograd
reference in tritonprop.ops.reference) and "torch" (torch native, the baseline every ratio is
taken against). On CUDA the shapes are those of BENCHMARKS.md; under the
interpreter each case keeps its dtype and layout but shrinks to a tiny stand-in shape.

A new op adds a builder and a `<op>_cases(device)` list in the style of batch norm below, and
registers it in `CASES`; the pytest suite and the report pick it up from there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from tritonprop import ops
from tritonprop.ops.reference import batchnorm as reference_batchnorm

IMPLS = ("tritonprop", "naive", "torch")
MODES = ("fwd", "fwd+bwd")
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
MEMORY_FORMATS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}

# {impl: {mode: callable}}
Callables = dict[str, dict[str, Callable[[], object]]]


@dataclass(frozen=True)
class Case:
    op: str
    label: str  # how tables name the case, e.g. "32x256x56x56"
    shape: tuple[int, ...]
    dtype: torch.dtype
    layout: str
    builder: Callable[["Case", torch.device], Callables]
    work: dict[str, int]  # mode -> bytes moved (unit "bytes") or FLOPs done (unit "flops")
    unit: str = "bytes"
    target: dict[str, float] = field(default_factory=dict)  # mode -> minimum t_torch / t_ours

    @property
    def name(self) -> str:
        return f"{self.op}-{self.label}-{DTYPE_NAMES[self.dtype]}-{self.layout}"

    @property
    def throughput_key(self) -> str:
        return "gbps" if self.unit == "bytes" else "tflops"

    @property
    def throughput_unit(self) -> str:
        return "GB/s" if self.unit == "bytes" else "TFLOP/s"

    def throughput(self, mode: str, median_ms: float) -> float:
        """GB/s or TFLOP/s of `mode` done in `median_ms`."""
        per_second = self.work[mode] / (median_ms * 1e-3)
        return per_second / (1e9 if self.unit == "bytes" else 1e12)

    def describe(self) -> dict:
        """The fields that identify a case in pytest-benchmark's extra_info and in bench.json."""
        return dict(op=self.op, case=self.label, dtype=DTYPE_NAMES[self.dtype], layout=self.layout)

    def build(self, device: torch.device) -> Callables:
        """Fresh random inputs on `device`, and a zero-argument callable per implementation and mode."""
        return self.builder(self, device)


# ------------------------------------------------------------------------------------------------
# BatchNorm2d, training
# ------------------------------------------------------------------------------------------------

BATCH_NORM_IMPLS = {
    "tritonprop": ops.batch_norm,
    "naive": reference_batchnorm.batch_norm,
    "torch": F.batch_norm,
}

# (shape on CUDA, as in BENCHMARKS.md; its stand-in under the interpreter; dtype; layout; the
# BENCHMARKS.md target for fwd+bwd as t_torch / t_ours: 2.5x for bf16 NCHW, 1.5x for bf16
# channels_last, 1.2x for fp32)
BATCH_NORM_SHAPES = [
    ((32, 256, 56, 56), (2, 3, 5, 5), torch.bfloat16, "NCHW", 2.5),
    ((32, 256, 56, 56), (2, 3, 5, 5), torch.bfloat16, "channels_last", 1.5),
    ((32, 256, 56, 56), (2, 3, 5, 5), torch.float32, "NCHW", 1.2),
    ((32, 64, 112, 112), (2, 2, 7, 7), torch.bfloat16, "NCHW", 2.5),
    ((256, 512, 7, 7), (4, 5, 3, 3), torch.bfloat16, "NCHW", 2.5),
]


def _build_batch_norm(case: Case, device: torch.device) -> Callables:
    generator = torch.Generator(device=device).manual_seed(0)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device)

    memory_format = MEMORY_FORMATS[case.layout]
    channels = case.shape[1]
    # Activations are off-centre and not unit-scale; the upstream gradient keeps the layout of y,
    # as it does inside a network.
    x = (random(*case.shape) * 2 + 0.5).to(case.dtype).contiguous(memory_format=memory_format).requires_grad_()
    dy = random(*case.shape).to(case.dtype).contiguous(memory_format=memory_format)
    # Parameters and running stats in the input's dtype, as in a model cast with .to(dtype): that
    # is the bf16 setting in which torch runs its native kernels rather than cuDNN (BENCHMARKS.md).
    weight = (random(channels).abs() + 0.5).to(case.dtype).requires_grad_()
    bias = random(channels).to(case.dtype).requires_grad_()

    callables = {}
    for impl, batch_norm in BATCH_NORM_IMPLS.items():
        # Each implementation updates its own running stats in place on every call.
        running_mean = random(channels).to(case.dtype)
        running_var = (random(channels).abs() + 0.5).to(case.dtype)

        def forward(batch_norm=batch_norm, running_mean=running_mean, running_var=running_var):
            return batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum=0.1, eps=1e-5)

        def forward_backward(forward=forward):
            # autograd.grad returns the gradients instead of accumulating them into .grad, so
            # repetitions neither grow state nor pay for a zeroing pass.
            return torch.autograd.grad(forward(), (x, weight, bias), dy)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def batch_norm_cases(device: torch.device) -> list[Case]:
    """BatchNorm2d training cases: BENCHMARKS.md shapes on CUDA, tiny stand-ins on the CPU."""
    cases = []
    for cuda_shape, cpu_shape, dtype, layout, target in BATCH_NORM_SHAPES:
        shape = cuda_shape if device.type == "cuda" else cpu_shape
        x_bytes = math.prod(shape) * dtype.itemsize
        cases.append(Case(
            op="batch_norm", label="x".join(map(str, shape)), shape=shape, dtype=dtype, layout=layout,
            builder=_build_batch_norm,
            # Minimal traffic: the forward reads x and writes y; the backward reads x, dy, writes dx.
            work={"fwd": 2 * x_bytes, "fwd+bwd": 5 * x_bytes},
            target={"fwd+bwd": target},
        ))
    return cases


# op name -> its case list for a device
CASES: dict[str, Callable[[torch.device], list[Case]]] = {
    "batch_norm": batch_norm_cases,
}


def cases_for(op_names, device: torch.device) -> list[Case]:
    return [case for op in op_names for case in CASES[op](device)]
