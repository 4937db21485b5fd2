"""Cross-entropy benchmark cases (bench/report.py also records their peak memory on CUDA).

On CUDA the shape is that of BENCHMARKS.md, 16384 tokens x 32000 classes in bf16, where the target
is fwd+bwd >= 1.5x torch native with peak extra memory <= 0.5x native's; under the interpreter a
tiny stand-in keeps the dtype.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from tritonprop.bench.case import Callables, Case, seeded_generator
from tritonprop.ops.cross_entropy import cross_entropy
from tritonprop.ops.reference import cross_entropy as reference

CROSS_ENTROPY_IMPLS = {
    "tritonprop": cross_entropy,
    "naive": reference.cross_entropy,
    "torch": F.cross_entropy,
}

# ((tokens, classes) on CUDA, as in BENCHMARKS.md; the stand-in under the interpreter; dtype;
# the BENCHMARKS.md target for fwd+bwd as t_torch / t_ours, None where it sets none)
CROSS_ENTROPY_SHAPES = [
    ((16384, 32000), (8, 130), torch.bfloat16, 1.5),
    ((16384, 32000), (8, 130), torch.float32, None),
]


def _build_cross_entropy(case: Case, device: torch.device) -> Callables:
    generator = seeded_generator(device)
    tokens, classes = case.shape
    logits = torch.randn(case.shape, generator=generator, device=device).to(case.dtype).requires_grad_()
    target = torch.randint(0, classes, (tokens,), generator=generator, device=device)

    callables = {}
    for impl, loss_fn in CROSS_ENTROPY_IMPLS.items():
        def forward(loss_fn=loss_fn):
            return loss_fn(logits, target)

        def forward_backward(forward=forward):
            # autograd.grad returns dlogits instead of accumulating it into .grad, so repetitions
            # neither grow state nor pay for a zeroing pass.
            return torch.autograd.grad(forward(), logits)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def cross_entropy_cases(device: torch.device) -> list[Case]:
    """Cross-entropy ('mean', class-index targets): BENCHMARKS.md shape on CUDA, a tiny stand-in on the CPU."""
    cases = []
    for cuda_shape, cpu_shape, dtype, target in CROSS_ENTROPY_SHAPES:
        shape = cuda_shape if device.type == "cuda" else cpu_shape
        logits_bytes = math.prod(shape) * dtype.itemsize
        cases.append(Case(
            op="cross_entropy", label="x".join(map(str, shape)), shape=shape, dtype=dtype, layout="N,C",
            builder=_build_cross_entropy,
            # Minimal traffic: the forward reads the logits; the backward reads them again and
            # writes dlogits (targets and per-row statistics are 1/C of that).
            work={"fwd": logits_bytes, "fwd+bwd": 3 * logits_bytes},
            target={"fwd+bwd": target} if target else {},
        ))
    return cases
