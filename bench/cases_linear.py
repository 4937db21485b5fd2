"""Linear benchmark cases: 4096^3 bf16 on CUDA, plain and with the fused bias + GELU epilogue.

Each case times three implementations, as every op does: "tritonprop" (ops.linear, bias and
GELU in the matmul's epilogue), "naive" (the autograd reference: matmul, bias and the GELU
formula as separate torch ops in fp32) and "torch" (F.linear, then F.gelu: cuBLAS followed by the
separate op, the baseline). Under the interpreter each case keeps its dtype and shrinks to a tiny
stand-in shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonprop.bench.case import Callables, Case, seeded_generator
from tritonprop.ops.linear import linear
from tritonprop.ops.reference import linear as reference_linear


def _torch_linear_then_activation(x, w, b, activation):
    y = F.linear(x, w, b)
    return F.gelu(y) if activation == "gelu" else y


def _naive_linear(x, w, b, activation):
    return reference_linear.linear(x, w, b, activation=activation)


def _tritonprop_linear(x, w, b, activation):
    return linear(x, w, b, activation=activation)


LINEAR_IMPLS = {"tritonprop": _tritonprop_linear, "naive": _naive_linear, "torch": _torch_linear_then_activation}

# ((M, N, K) on CUDA, as in BENCHMARKS.md; a tiny stand-in; dtype; bias + GELU fused; targets as
# t_torch / t_ours: plain >= 0.9x cuBLAS alone, fused >= 1.1x cuBLAS followed by the separate op)
LINEAR_SHAPES = [
    ((4096, 4096, 4096), (7, 9, 13), torch.bfloat16, False, {"fwd": 0.9, "fwd+bwd": 0.9}),
    ((4096, 4096, 4096), (7, 9, 13), torch.bfloat16, True, {"fwd": 1.1, "fwd+bwd": 1.1}),
    # fp32 follows torch.backends.cuda.matmul.allow_tf32 on both sides (off by default): no target.
    ((4096, 4096, 4096), (7, 9, 13), torch.float32, False, {}),
    ((4096, 4096, 4096), (7, 9, 13), torch.float32, True, {}),
]


def _build_linear(case: Case, device: torch.device) -> Callables:
    M, K = case.shape
    N, fused = case.extra
    activation = "gelu" if fused else None
    generator = seeded_generator(device)

    def random(*shape, scale=1.0):
        return (torch.randn(shape, generator=generator, device=device) * scale).to(case.dtype)

    x = random(M, K).requires_grad_()
    # nn.Linear's scale, so that the outputs stay O(1) in bf16.
    w = random(N, K, scale=K ** -0.5).requires_grad_()
    b = random(N).requires_grad_() if fused else None
    dy = random(M, N)
    leaves = (x, w, b) if fused else (x, w)

    callables = {}
    for impl, fn in LINEAR_IMPLS.items():
        def forward(fn=fn):
            return fn(x, w, b, activation)

        def forward_backward(forward=forward):
            # autograd.grad returns the gradients instead of accumulating them into .grad.
            return torch.autograd.grad(forward(), leaves, dy)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def linear_cases(device: torch.device) -> list[Case]:
    """Linear cases: BENCHMARKS.md shapes on CUDA, tiny stand-ins on the CPU."""
    cases = []
    for cuda_shape, cpu_shape, dtype, fused, target in LINEAR_SHAPES:
        M, N, K = cuda_shape if device.type == "cuda" else cpu_shape
        flops = 2 * M * N * K
        label = f"{M}x{N}x{K}" + (" +bias+gelu" if fused else "")
        cases.append(Case(
            op="linear", label=label, shape=(M, K), dtype=dtype, layout="row-major", builder=_build_linear,
            # The backward is two more products of the forward's size: dx = dy w and dw = dy^T x.
            work={"fwd": flops, "fwd+bwd": 3 * flops}, unit="flops", target=target, extra=(N, fused),
        ))
    return cases
