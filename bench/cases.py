"""What is benchmarked: one `Case` per shape, dtype and layout, each able to build its callables.

    for case in cases_for(["batch_norm"], device):
        fns = case.build(device)               # {impl: {mode: zero-argument callable}}
        fns["tritonprop"]["fwd+bwd"]()

Every op benchmarks three implementations: "tritonprop" (our kernels), "naive" (the autograd
reference in tritonprop.ops.reference) and "torch" (torch native, the baseline every ratio is
taken against). On CUDA the shapes are those of BENCHMARKS.md; under the
interpreter each case keeps its dtype and layout but shrinks to a tiny stand-in shape.

The case groups are those the op registry (tritonprop/registry.py) names as its ops' bench cases,
plus the groups that benchmark no single op (`NON_OP_GROUPS`: the whole models). A group `g` is
built by the function `g_cases(device)` imported here. A new op writes its builder and case list
in the style of batch norm below (in a module of its own, `bench/cases_<op>.py`, importing `Case`
from `bench/case.py`), imports it here and names its group in its registry entry; each case's
`op` is the registry name of the op it times. The report picks the groups up from `CASES`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from tritonprop import ops, registry
from tritonprop.bench.cases_attention import attention_cases
from tritonprop.bench.cases_cross_entropy import cross_entropy_cases
from tritonprop.bench.cases_elementwise import elementwise_cases
from tritonprop.bench.cases_layernorm import layer_norm_cases
from tritonprop.bench.cases_linear import linear_cases
from tritonprop.bench.cases_models import models_cases
from tritonprop.bench.cases_rnn import gru_cases, lstm_cases, rnn_cases
from tritonprop.bench.case import DTYPE_NAMES, IMPLS, MEMORY_FORMATS, MODES, Callables, Case, seeded_generator  # noqa: F401
from tritonprop.ops.reference import batchnorm as reference_batchnorm
from tritonprop.ops.reference import conv2d as reference_conv2d

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
    generator = seeded_generator(device)

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


# ------------------------------------------------------------------------------------------------
# Conv2d (and the fused conv + bias + ReLU epilogue)
# ------------------------------------------------------------------------------------------------

def _torch_conv_then_relu(x, w, b, stride, padding, activation=None):
    y = F.conv2d(x, w, b, stride, padding)
    return torch.relu(y) if activation == "relu" else y


def _unfold_conv(x, w, b, stride, padding, activation=None):
    return reference_conv2d.conv2d_unfold(x, w, b, stride, padding, activation=activation)


def _tritonprop_conv(x, w, b, stride, padding, activation=None):
    return ops.conv2d(x, w, b, stride, padding, activation=activation)


CONV2D_IMPLS = {"tritonprop": _tritonprop_conv, "naive": _unfold_conv, "torch": _torch_conv_then_relu}

# (N, C, K, H, kernel, stride, padding) on CUDA as in BENCHMARKS.md; a tiny stand-in; dtype;
# layout; fused ReLU epilogue; targets as t_torch / t_ours (bf16 channels_last 3x3: fwd 0.8x,
# fwd+bwd 0.7x; the fused path 1.0x against cuDNN conv followed by the separate ops).
CONV2D_SHAPES = [
    ((32, 64, 64, 56, 3, 1, 1), (2, 4, 4, 6, 3, 1, 1), torch.bfloat16, "channels_last", False,
     {"fwd": 0.8, "fwd+bwd": 0.7}),
    ((32, 64, 64, 56, 3, 1, 1), (2, 4, 4, 6, 3, 1, 1), torch.bfloat16, "channels_last", True,
     {"fwd": 1.0, "fwd+bwd": 1.0}),
    ((32, 64, 64, 56, 3, 1, 1), (2, 4, 4, 6, 3, 1, 1), torch.float32, "NCHW", False, {}),
    ((32, 256, 64, 56, 1, 1, 0), (2, 5, 3, 5, 1, 1, 0), torch.bfloat16, "channels_last", False, {}),
    ((32, 128, 128, 28, 3, 1, 1), (2, 4, 4, 5, 3, 1, 1), torch.bfloat16, "channels_last", False,
     {"fwd": 0.8, "fwd+bwd": 0.7}),
    ((32, 3, 64, 224, 7, 2, 3), (1, 3, 4, 9, 7, 2, 3), torch.bfloat16, "channels_last", False, {}),
    ((128, 32, 64, 28, 3, 1, 1), (2, 3, 4, 5, 3, 1, 1), torch.float32, "NCHW", False, {}),
]


def _build_conv2d(case: Case, device: torch.device) -> Callables:
    N, C, H, W = case.shape
    K, R, stride, padding, activation = case.extra
    generator = seeded_generator(device)
    memory_format = MEMORY_FORMATS[case.layout]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the cuDNN baseline of BENCHMARKS.md picks its best algorithm

    def random(*shape, scale=1.0):
        t = torch.randn(shape, generator=generator, device=device) * scale
        return t.to(case.dtype).contiguous(memory_format=memory_format) if len(shape) == 4 else t.to(case.dtype)

    x = random(N, C, H, W).requires_grad_()
    w = random(K, C, R, R, scale=(C * R * R) ** -0.5).requires_grad_()
    b = random(K).requires_grad_()
    Ho = (H + 2 * padding - R) // stride + 1
    dy = random(N, K, Ho, Ho)

    callables = {}
    for impl, conv in CONV2D_IMPLS.items():
        def forward(conv=conv):
            return conv(x, w, b, stride, padding, activation)

        def forward_backward(forward=forward):
            return torch.autograd.grad(forward(), (x, w, b), dy)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def conv2d_cases(device: torch.device) -> list[Case]:
    """Conv2d cases: BENCHMARKS.md shapes on CUDA, tiny stand-ins on the CPU."""
    cases = []
    for cuda_shape, cpu_shape, dtype, layout, fused, target in CONV2D_SHAPES:
        N, C, K, H, R, stride, padding = cuda_shape if device.type == "cuda" else cpu_shape
        Ho = (H + 2 * padding - R) // stride + 1
        flops = 2 * N * K * Ho * Ho * C * R * R
        label = f"{N}x{C}->{K}x{H} {R}x{R} s{stride}" + (" +bias+relu" if fused else "")
        cases.append(Case(
            op="conv2d", label=label, shape=(N, C, H, H), dtype=dtype, layout=layout, builder=_build_conv2d,
            work={"fwd": flops, "fwd+bwd": 3 * flops}, unit="flops", target=target,
            extra=(K, R, stride, padding, "relu" if fused else None),
        ))
    return cases


# Case groups that time no single op of the registry: group -> its case list for a device.
NON_OP_GROUPS: dict[str, Callable[[torch.device], list[Case]]] = {"models": models_cases}


def _op_groups() -> dict[str, Callable[[torch.device], list[Case]]]:
    """The registry's bench groups, each to its `<group>_cases` function."""
    missing = [group for group in registry.groups("bench") if f"{group}_cases" not in globals()]
    if missing:
        raise ImportError(f"the op registry names bench groups with no case function here: "
                          f"{', '.join(f'{group}_cases' for group in missing)}")
    return {group: globals()[f"{group}_cases"] for group in registry.groups("bench")}


# group -> its case list for a device: the registry's groups, then the non-op groups.
CASES: dict[str, Callable[[torch.device], list[Case]]] = {**_op_groups(), **NON_OP_GROUPS}


def cases_for(op_names, device: torch.device) -> list[Case]:
    return [case for op in op_names for case in CASES[op](device)]
