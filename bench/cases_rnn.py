"""Recurrent benchmark cases: the BENCHMARKS.md RNN table (one tanh layer) on CUDA, and the LSTM
and GRU at the same (T, B, I, H); tiny stand-ins on the CPU.

Each case times three implementations: "tritonprop" (ops.RNN / LSTM / GRU: the hoisted input
projection, then the recurrence engine, persistent where the grid fits the GPU; BPTT the same way
in reverse, then the weight-gradient matmuls), "naive" (the Python loop over time steps with
autograd doing BPTT, ops/reference/) and "torch" (torch.nn.RNN / LSTM / GRU, cuDNN on CUDA, the
baseline). FLOPs follow BENCHMARKS.md: 2*T*B*G*H*(I+H) for the forward (G gate blocks: RNN 1,
LSTM 4, GRU 3), x3 for forward plus backward. Under the interpreter each case keeps its dtype and
shrinks to a tiny stand-in shape.
"""
from __future__ import annotations

import torch

from tritonprop.bench.case import Callables, Case, seeded_generator
from tritonprop.ops.gru import GRU
from tritonprop.ops.lstm import LSTM
from tritonprop.ops.reference import gru as reference_gru
from tritonprop.ops.reference import lstm as reference_lstm
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
# The LSTM and GRU at the RNN rows' shapes; BENCHMARKS.md's target for both: >= 3x cuDNN forward
# plus backward at (256, 64, 256, 512).
GATED_SHAPES = [
    ((256, 64, 256, 512), torch.float32, {"fwd+bwd": 3.0}),
    ((256, 64, 256, 512), torch.bfloat16, {"fwd+bwd": 3.0}),
    ((256, 64, 1024, 1024), torch.bfloat16, {}),
    ((16, 64, 57, 128), torch.float32, {}),
    ((1024, 8, 128, 256), torch.bfloat16, {}),
]
# op -> (our module, torch's, the naive loop, gate blocks G, its shapes)
FAMILY = {
    "rnn": (RNN, torch.nn.RNN, reference.rnn, 1, RNN_SHAPES),
    "lstm": (LSTM, torch.nn.LSTM, reference_lstm.lstm, 4, GATED_SHAPES),
    "gru": (GRU, torch.nn.GRU, reference_gru.gru, 3, GATED_SHAPES),
}


def _build_recurrent(case: Case, device: torch.device) -> Callables:
    T, B, I, H = case.shape
    ours_class, torch_class, naive, _, _ = FAMILY[case.op]
    generator = seeded_generator(device)
    theirs = torch_class(I, H).to(device, case.dtype)
    ours = ours_class(I, H).to(device, case.dtype)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn((T, B, I), generator=generator, device=device).to(case.dtype).requires_grad_()
    h0 = torch.randn((1, B, H), generator=generator, device=device).to(case.dtype).requires_grad_()
    if case.op == "lstm":
        c0 = torch.randn((1, B, H), generator=generator, device=device).to(case.dtype).requires_grad_()
        h0 = (h0, c0)
    dy = torch.randn((T, B, H), generator=generator, device=device).to(case.dtype)

    def run_naive(x, h0):
        return naive(x, h0, theirs._flat_weights)

    modules = {"tritonprop": ours, "naive": run_naive, "torch": theirs}
    callables = {}
    for impl, module in modules.items():
        states = h0 if isinstance(h0, tuple) else (h0,)
        leaves = (x, *states, *(theirs.parameters() if impl != "tritonprop" else ours.parameters()))

        def forward(module=module):
            return module(x, h0)[0]

        def forward_backward(forward=forward, leaves=leaves):
            # autograd.grad returns the gradients instead of accumulating them into .grad.
            return torch.autograd.grad(forward(), leaves, dy)

        callables[impl] = {"fwd": forward, "fwd+bwd": forward_backward}
    return callables


def _cases(op: str, device: torch.device) -> list[Case]:
    """`op`'s cases: BENCHMARKS.md shapes on CUDA, tiny stand-ins on the CPU."""
    gates, shapes = FAMILY[op][3], FAMILY[op][4]
    cases = []
    for cuda_shape, dtype, target in shapes:
        T, B, I, H = cuda_shape if device.type == "cuda" else CPU_SHAPE
        flops = 2 * T * B * gates * H * (I + H)
        cases.append(Case(
            op=op, label=f"T{T}xB{B}xI{I}xH{H}", shape=(T, B, I, H), dtype=dtype, layout="time-major",
            builder=_build_recurrent, work={"fwd": flops, "fwd+bwd": 3 * flops}, unit="flops", target=target,
        ))
    return cases


def rnn_cases(device: torch.device) -> list[Case]:
    """RNN (tanh) cases."""
    return _cases("rnn", device)


def lstm_cases(device: torch.device) -> list[Case]:
    """LSTM cases, at the RNN rows' shapes."""
    return _cases("lstm", device)


def gru_cases(device: torch.device) -> list[Case]:
    """GRU cases, at the RNN rows' shapes."""
    return _cases("gru", device)
