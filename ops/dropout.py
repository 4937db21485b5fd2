"""Dropout: the autograd.Function, `dropout` with F.dropout's signature, and `Dropout` (a subclass
of torch's).

The mask cannot equal torch's (torch's generators are not Philox-compatible with Triton's), but
it is drawn the way a torch op draws randomness: each training call takes a fresh seed from
torch's generator for the input's device, so `torch.manual_seed` reproduces it and consecutive
calls differ. Only that seed is kept for the backward, which regenerates the mask from it
(kernels/dropout.py, ops/reference/dropout.py).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from tritonprop import backend
from tritonprop.kernels import dropout as K
from tritonprop.ops import _checks
from tritonprop.ops.activations import check_in_place_target
from tritonprop.ops.reference import dropout as reference

OP = "dropout"


class DropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, seed, p, inplace):
        output = K.forward(input, seed, p, out=input if inplace else None)
        if inplace:
            ctx.mark_dirty(input)
        ctx.save_for_backward(seed)
        ctx.p = p
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        seed, = ctx.saved_tensors
        return K.backward(dy, seed, ctx.p), None, None, None


def dropout(input, p=0.5, training=True, inplace=False):
    """`torch.nn.functional.dropout`, computed by a Triton kernel.

    As in torch, ``training=False``, ``p=0`` and an empty input return `input` itself.
    """
    if p < 0.0 or p > 1.0:
        # The same error, and type, as torch.nn.functional.dropout.
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    _checks.check_tensor(OP, "input", input)
    if not training or p == 0 or input.numel() == 0:
        return input
    if not input.is_floating_point():
        # torch raises a RuntimeError here too (its float mask cannot be cast to an integer output).
        raise RuntimeError(f"{OP}: input must be a floating-point tensor in training mode, got dtype {input.dtype}")
    if backend.use_reference():
        return reference.dropout(input, p, training, inplace)
    backend.check_devices(OP, input=input)
    if inplace:
        check_in_place_target(OP, input)
    output = DropoutFn.apply(input, reference.draw_seed(input.device), float(p), bool(inplace))
    # In place, torch returns input itself; see ops.activations.relu.
    return input if inplace else output


class Dropout(torch.nn.Dropout):
    """Drop-in `torch.nn.Dropout` (``inplace=True`` included)."""

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)
