"""RNN benchmark cases: the BENCHMARKS.md RNN table (one tanh layer) on CUDA, tiny stand-ins on the CPU.

Each case times three implementations: "tritonprop" (ops.RNN: the hoisted input projection, then
the persistent recurrence kernel; BPTT in one reverse launch, then the weight-gradient matmuls),
"naive" (the Python loop over time steps with autograd doing BPTT, ops/reference/rnn.py) and
"torch" (torch.nn.RNN, cuDNN on CUDA, the baseline). FLOPs follow BENCHMARKS.md: 2*T*B*H*(I+H)
for the forward, x3 for forward plus backward. Under the interpreter each case keeps its dtype and
shrinks to a tiny stand-in shape.
"""
from __future__ import annotations

import torch

from tritonprop.bench.case import Callables, Case, seeded_generator
from tritonprop.ops.reference import rnn as reference
from tritonprop.ops.rnn import RNN

# ((T, B, I, H) on CUDA, as in BENCHMARKS.md; dtype; targets as t_torch / t_ours). Every row also
# aims at >= 10x the loop, which the report reads from the "naive" rows.
RNN_SHAPES = [
    ((256, 64, 256, 512), torch.float32, {"fwd+bwd": 3.0}),
    ((256, 64, 256, 512), torch.bfloat16, {"fwd+bwd": 3.0}),
    ((256, 64, 1024, 1024), torch.bfloat16, {}),
    ((16, 64, 57, 128), torch.float32, {}),  # the name classifier's shape
    ((1024, 8, 128, 256), torch.bfloat16, {"fwd+bwd": 5.0}),
]
CPU_SHAPE = (4, 2, 3, 5)


def _build_rnn(case: Case, device: torch.device) -> Callables:
    T, B, I, H = case.shape
    generator = seeded_generator(device)
    theirs = torch.nn.RNN(I, H).to(device, case.dtype)
    ours = RNN(I, H).to(device, case.dtype)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn((T, B, I), generator=generator, device=device).to(case.dtype).requires_grad_()
    h0 = torch.randn((1, B, H), generator=generator, device=device).to(case.dtype).requires_grad_()
    dy = torch.randn((T, B, H), generator=generator, device=device).to(case.dtype)

    def run_naive(x, h0):
        return reference.rnn(x, h0, theirs._flat_weights)

    modules = {"tritonprop": ours, "naive": run_naive, "torch": theirs}
    callables = {}
    for impl, module in modules.items():
        leaves = (x, h0, *(theirs.parameters() if impl != "tritonprop" else ours.parameters()))

        def forward(module=module):
            return module(x, h0)[0]

        def forward_backward(forward=forward, leaves=leaves):
            # autograd.grad returns the gradients instead of accumulating them into .grad.
            return torch.autograd.grad(forward(), leaves, dy)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def rnn_cases(device: torch.device) -> list[Case]:
    """RNN cases: BENCHMARKS.md shapes on CUDA, tiny stand-ins on the CPU."""
    cases = []
    for cuda_shape, dtype, target in RNN_SHAPES:
        T, B, I, H = cuda_shape if device.type == "cuda" else CPU_SHAPE
        flops = 2 * T * B * H * (I + H)
        cases.append(Case(
            op="rnn", label=f"T{T}xB{B}xI{I}xH{H}", shape=(T, B, I, H), dtype=dtype, layout="time-major",
            builder=_build_rnn, work={"fwd": flops, "fwd+bwd": 3 * flops}, unit="flops", target=target,
        ))
    return cases
