"""The `Case` every benchmark is described by, and the names shared by all ops' case lists.

A case is one shape, dtype and layout of one op; `build(device)` returns a zero-argument callable
per implementation ("tritonprop", "naive", "torch") and mode ("fwd", "fwd+bwd").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

IMPLS = ("tritonprop", "naive", "torch")
MODES = ("fwd", "fwd+bwd")
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
MEMORY_FORMATS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}

# {impl: {mode: callable}}
Callables = dict[str, dict[str, Callable[[], object]]]


def seeded_generator(device: torch.device) -> torch.Generator:
    """The generator every builder draws its inputs from, seeded 0.

    The static sm_90 report builds cases on meta tensors, which have no generator of their own;
    no value is ever drawn there, and a CPU generator stands in.
    """
    if device.type == "meta":
        return torch.Generator().manual_seed(0)
    return torch.Generator(device=device).manual_seed(0)


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
    # Targets against further baselines a case measures beside "torch": impl -> {mode -> minimum
    # t_impl / t_ours} (attention is held to SDPA's FlashAttention-2 backend too).
    other_targets: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: tuple = ()  # op-specific parameters the builder needs (kernel size, stride, ...)

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


