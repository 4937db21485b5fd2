"""Attention benchmark cases: the BENCHMARKS.md shapes (B=4, H=16, S=4096, D=64/128, bf16, causal and not).

Implementations: "tritonprop" (the fused kernels), "naive" (ops/reference/attention.py: the whole
score matrix, softmax, matmul), "torch" (F.scaled_dot_product_attention forced to cuDNN, the
baseline every ratio is taken against, as the targets are stated against it), and on CUDA
"sdpa-flash" and "sdpa-efficient" (SDPA forced to FlashAttention-2 and to memory-efficient
attention). Under the interpreter the SDPA backends cannot be forced, so "torch" is SDPA's
default CPU backend there, the per-backend rows are absent, and the shapes shrink to tiny stand-ins.

FLOPs per BENCHMARKS.md: 4 B H Sq Sk D for the forward, halved under is_causal; forward plus
backward is 3.5 times the forward.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from tritonprop.bench.case import IMPLS, Callables, Case, seeded_generator
from tritonprop.ops.attention import scaled_dot_product_attention
from tritonprop.ops.reference import attention as reference_attention

CUDA_IMPLS = IMPLS + ("sdpa-flash", "sdpa-efficient")
SDPA_BACKENDS = {"torch": SDPBackend.CUDNN_ATTENTION, "sdpa-flash": SDPBackend.FLASH_ATTENTION,
                 "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION}

# ((B, H, S, D) on CUDA; a tiny stand-in; causal). Targets as t_baseline / t_ours: against cuDNN,
# forward >= 1.0 and forward + backward >= 0.9; against FlashAttention-2, forward + backward >= 1.3.
ATTENTION_SHAPES = [
    ((4, 16, 4096, 64), (1, 2, 33, 16), False),
    ((4, 16, 4096, 64), (1, 2, 33, 16), True),
    ((4, 16, 4096, 128), (1, 2, 33, 32), False),
    ((4, 16, 4096, 128), (1, 2, 33, 32), True),
]
TARGET = {"fwd": 1.0, "fwd+bwd": 0.9}
OTHER_TARGETS = {"sdpa-flash": {"fwd+bwd": 1.3}}


def attention_impls(device: torch.device) -> tuple[str, ...]:
    return CUDA_IMPLS if device.type == "cuda" else IMPLS


def _sdpa_with_backend(backend):
    def run(q, k, v, is_causal):
        # Outside CUDA no backend can be forced; SDPA picks its CPU kernel.
        forced = sdpa_kernel(backend) if q.is_cuda else contextlib.nullcontext()
        with forced:
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return run


def _tritonprop(q, k, v, is_causal):
    return scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def _naive(q, k, v, is_causal):
    return reference_attention.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def _build_attention(case: Case, device: torch.device) -> Callables:
    (is_causal,) = case.extra
    generator = seeded_generator(device)

    def random(*shape):
        return torch.randn(shape, generator=generator, device=device).to(case.dtype).requires_grad_()

    q, k, v = random(*case.shape), random(*case.shape), random(*case.shape)
    do = torch.randn(case.shape, generator=generator, device=device).to(case.dtype)
    fns = {"tritonprop": _tritonprop, "naive": _naive}
    fns.update({impl: _sdpa_with_backend(backend) for impl, backend in SDPA_BACKENDS.items()})

    callables = {}
    for impl in attention_impls(device):
        def forward(fn=fns[impl]):
            return fn(q, k, v, is_causal)

        def forward_backward(forward=forward):
            return torch.autograd.grad(forward(), (q, k, v), do)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def attention_cases(device: torch.device) -> list[Case]:
    """Attention cases: BENCHMARKS.md shapes on CUDA, tiny stand-ins on the CPU."""
    cases = []
    for cuda_shape, cpu_shape, is_causal in ATTENTION_SHAPES:
        B, H, S, D = cuda_shape if device.type == "cuda" else cpu_shape
        flops = 4 * B * H * S * S * D // (2 if is_causal else 1)
        cases.append(Case(
            op="scaled_dot_product_attention", label=f"B{B}xH{H}xS{S}xD{D}" + (" causal" if is_causal else ""), shape=(B, H, S, D),
            dtype=torch.bfloat16, layout="BHSD", builder=_build_attention,
            work={"fwd": flops, "fwd+bwd": flops * 7 // 2}, unit="flops", target=TARGET,
            other_targets=OTHER_TARGETS, extra=(is_causal,),
        ))
    return cases
