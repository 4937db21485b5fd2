"""Benchmark cases of the elementwise ops: GELU and dropout on a transformer-sized activation.

    for case in elementwise_cases(device):
        case.build(device)["tritonprop"]["fwd+bwd"]()

On CUDA the activation is 16384 x 4096 bf16 (4096 tokens of a batch of 4, hidden size 4096);
under the interpreter a tiny stand-in keeps the dtype. The issue sets no speed targets.

Bytes are counted by the minimal traffic, as BENCHMARKS.md counts BN's: GELU's forward reads x
and writes y (2|x|), its backward reads x and dy and writes dx (3|x|). Dropout's forward is also
2|x|, but its backward regenerates the mask from the seed, so it only reads dy and writes dx
(2|x|): 4|x| for forward plus backward.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tritonprop.bench.case import Callables, Case, seeded_generator
from tritonprop.ops.activations import gelu
from tritonprop.ops.dropout import dropout
from tritonprop.ops.reference import activations as reference_activations

DROPOUT_P = 0.1


def _naive_dropout(x, p):
    # The textbook formula in separate torch ops: draw a mask, multiply, scale. (The reference
    # module's Philox mask is computed on the host in numpy: it would time the CPU, not the GPU.)
    return x * (torch.rand_like(x) >= p) / (1 - p)


IMPLS = {
    "gelu": {"tritonprop": gelu, "naive": reference_activations.gelu, "torch": F.gelu},
    "dropout": {
        "tritonprop": lambda x: dropout(x, DROPOUT_P),
        "naive": lambda x: _naive_dropout(x, DROPOUT_P),
        "torch": lambda x: F.dropout(x, DROPOUT_P),
    },
}

# (op, shape on CUDA, its stand-in under the interpreter, dtype, bytes of forward plus backward in |x|)
ELEMENTWISE_SHAPES = [
    ("gelu", (16384, 4096), (16, 37), torch.bfloat16, 5),
    ("dropout", (16384, 4096), (16, 37), torch.bfloat16, 4),
    ("gelu", (16384, 4096), (16, 37), torch.float32, 5),
    ("dropout", (16384, 4096), (16, 37), torch.float32, 4),
]


def _build(case: Case, device: torch.device) -> Callables:
    generator = seeded_generator(device)
    x = torch.randn(case.shape, generator=generator, device=device).to(case.dtype).requires_grad_()
    dy = torch.randn(case.shape, generator=generator, device=device).to(case.dtype)

    callables = {}
    for impl, fn in IMPLS[case.op].items():
        def forward(fn=fn):
            return fn(x)

        def forward_backward(forward=forward):
            return torch.autograd.grad(forward(), (x,), dy)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def elementwise_cases(device: torch.device) -> list[Case]:
    """GELU and dropout (p = 0.1) cases: 16384 x 4096 bf16 on CUDA, tiny stand-ins on the CPU."""
    cases = []
    for op, cuda_shape, cpu_shape, dtype, round_trip in ELEMENTWISE_SHAPES:
        shape = cuda_shape if device.type == "cuda" else cpu_shape
        x_bytes = math.prod(shape) * dtype.itemsize
        label = "x".join(map(str, shape)) + (f" p={DROPOUT_P}" if op == "dropout" else "")
        cases.append(Case(
            op=op, label=label, shape=shape, dtype=dtype, layout="contiguous", builder=_build,
            work={"fwd": 2 * x_bytes, "fwd+bwd": round_trip * x_bytes},
        ))
    return cases
