"""Benchmark cases of LayerNorm: transformer-sized activations, tritonprop vs the naive reference vs torch.

    for case in layer_norm_cases(device):
        case.build(device)["tritonprop"]["fwd+bwd"]()

On CUDA the shapes are those of BENCHMARKS.md (16384 tokens of hidden size 1024 and 4096, bf16
and fp32; the target for fwd+bwd is 1.5x torch native); under the interpreter each case keeps
its dtype and shrinks to a tiny stand-in.

Bytes are counted by the minimal traffic, as BENCHMARKS.md counts them: the forward reads x and
writes y (2|x|), the backward reads x and dy and writes dx (3|x|), so 5|x| for forward plus
backward. Parameters and statistics are O(N + M) and are not counted.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tritonprop.bench.case import Callables, Case, seeded_generator
from tritonprop.ops.layernorm import layer_norm
from tritonprop.ops.reference import layernorm as reference_layernorm

IMPLS = {
    "tritonprop": layer_norm,
    "naive": reference_layernorm.layer_norm,
    "torch": F.layer_norm,
}

# (rows x columns on CUDA, as in BENCHMARKS.md; its stand-in under the interpreter; dtype;
# the target for fwd+bwd as t_torch / t_ours)
LAYER_NORM_SHAPES = [
    ((16384, 1024), (4, 24), torch.bfloat16, 1.5),
    ((16384, 4096), (3, 40), torch.bfloat16, 1.5),
    ((16384, 1024), (4, 24), torch.float32, 1.5),
    ((16384, 4096), (3, 40), torch.float32, 1.5),
]


def _build_layer_norm(case: Case, device: torch.device) -> Callables:
    generator = seeded_generator(device)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device)

    hidden = case.shape[-1]
    # Activations off-centre and not unit-scale; parameters in the input's dtype, as in a model
    # cast with .to(dtype).
    x = (random(*case.shape) * 2 + 0.5).to(case.dtype).requires_grad_()
    dy = random(*case.shape).to(case.dtype)
    weight = (random(hidden).abs() + 0.5).to(case.dtype).requires_grad_()
    bias = random(hidden).to(case.dtype).requires_grad_()

    callables = {}
    for impl, fn in IMPLS.items():
        def forward(fn=fn):
            return fn(x, (hidden,), weight, bias, 1e-5)

        def forward_backward(forward=forward):
            # autograd.grad returns the gradients instead of accumulating them into .grad, so
            # repetitions neither grow state nor pay for a zeroing pass.
            return torch.autograd.grad(forward(), (x, weight, bias), dy)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def layer_norm_cases(device: torch.device) -> list[Case]:
    """LayerNorm cases: BENCHMARKS.md shapes on CUDA, tiny stand-ins on the CPU."""
    cases = []
    for cuda_shape, cpu_shape, dtype, target in LAYER_NORM_SHAPES:
        shape = cuda_shape if device.type == "cuda" else cpu_shape
        x_bytes = math.prod(shape) * dtype.itemsize
        cases.append(Case(
            op="layer_norm", label="x".join(map(str, shape)), shape=shape, dtype=dtype, layout="contiguous",
            builder=_build_layer_norm,
            work={"fwd": 2 * x_bytes, "fwd+bwd": 5 * x_bytes},
            target={"fwd+bwd": target},
        ))
    return cases
