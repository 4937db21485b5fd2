"""Dropout: the custom ops with their autograd, `dropout` with F.dropout's signature, and `Dropout` (a subclass
of torch's).

The mask cannot equal torch's (torch's generators are not Philox-compatible with Triton's), but
it is drawn the way a torch op draws randomness: each training call takes a fresh seed from
torch's generator for the input's device, so `torch.manual_seed` reproduces it and consecutive
calls differ. Only that seed is kept for the backward, which regenerates the mask from it
(kernels/dropout.py, ops/reference/dropout.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from tritonprop.kernels import dropout as K
from tritonprop.ops import _checks
from tritonprop.ops._library import call, differentiable, dispatch, kernel_op
from tritonprop.ops.activations import check_in_place_target
from tritonprop.ops.reference import dropout as reference

OP = "dropout"


@kernel_op("dropout")
def dropout_op(input: Tensor, seed: Tensor, p: float) -> Tensor:
    """input * mask / (1 - p), the mask drawn from (`seed`, `p`)."""
    return K.forward(input, seed, p)


def _setup_context(ctx, inputs, output):
    _, seed, p = inputs
    ctx.save_for_backward(seed)
    ctx.p = p


def _backward(ctx, dy):
    seed, = ctx.saved_tensors
    # Dropout is linear, so its backward is the same mask (same seed) applied to dy: this op
    # again, differentiable to any order.
    return call(dropout_op, dy, seed, ctx.p), None, None


differentiable(dropout_op, setup_context=_setup_context, backward=_backward)


def _probability(p) -> float:
    """p as torch's dropout reads it, with torch's exception type for each refusal."""
    # torch takes any real scalar that its argument parser reads as a double: bools, numpy
    # scalars and 0-d tensors included. A tensor of several elements fails its Python range
    # check (RuntimeError); one of a single element but not 0-d fails the parser (TypeError).
    if isinstance(p, torch.Tensor) and p.numel() > 1:
        raise RuntimeError(f"{OP}: p must be a number or a 0-d tensor, but got a tensor of shape {tuple(p.shape)}")
    if isinstance(p, (bool, np.bool_, np.integer, np.floating)) or (isinstance(p, torch.Tensor) and p.dim() == 0):
        p = float(p)
    if isinstance(p, float) and math.isnan(p):
        # torch's Python range check lets NaN through and its C++ check refuses it: RuntimeError.
        raise RuntimeError(f"{OP}: p has to be between 0 and 1, but got nan")
    return _checks.check_probability(OP, "p", p)


def _check_dtype(input, p):
    """A training call with 0 < p: torch's outcome for each dtype that the kernel does not take."""
    if input.is_floating_point():
        return
    if input.is_complex() or p == 1.0:
        # torch multiplies by a zero mask at p = 1 (any dtype) and has no complex Bernoulli sampler.
        raise NotImplementedError(f"{OP}: input of dtype {input.dtype} is not supported in training mode "
                                  f"(p={p}); tritonprop's dropout takes floating-point tensors")
    # torch's float mask cannot be cast to an integer or bool output: a RuntimeError.
    raise RuntimeError(f"{OP}: input must be a floating-point tensor in training mode, got dtype {input.dtype}")


def dropout(input, p=0.5, training=True, inplace=False):
    """`torch.nn.functional.dropout`, computed by a Triton kernel.

    As in torch, ``training=False``, ``p=0`` and an empty input return `input` itself.
    """
    p = _probability(p)
    _checks.check_tensor(OP, "input", input)
    if not isinstance(training, bool):
        # torch's argument parser takes only a Python bool here (not 0/1, None or a tensor).
        raise TypeError(f"{OP}: training must be bool, not {type(training).__name__}")
    if not training or p == 0 or input.numel() == 0:
        return input
    _check_dtype(input, p)

    def kernels(input):
        if inplace:
            check_in_place_target(OP, input)
        output = call(dropout_op, input, reference.draw_seed(input.device), p)
        # In place: computed out of place and copied, as ops.activations.apply_activation explains.
        return input.copy_(output) if inplace else output

    return dispatch(OP, dict(input=input), kernels=kernels,
                    reference=lambda naive, input: naive(input, p, training, inplace))


class Dropout(torch.nn.Dropout):
    """Drop-in `torch.nn.Dropout` (``inplace=True`` included)."""

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)
