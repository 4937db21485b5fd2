"""Linear in plain torch autograd: the oracle for the Triton linear kernels.

For an input x of shape (..., in_features), a weight W of shape (out_features, in_features) and
a bias b of shape (out_features,):

    z = x W^T + b          (every leading index of x is a separate row)
    y = act(z)             act: none, ReLU, exact GELU or tanh-approximated GELU

The activations are written out from their formulas (see `ACTIVATIONS`), as the fused kernel's
epilogue applies them. There is no hand-written backward: autograd derives it
(linear_numpy.py derives it by hand). Low-precision inputs are computed in float32 and cast back
once, as the kernel does.
"""
from __future__ import annotations

import math

import torch


def gelu(z):
    """Exact GELU: z * Phi(z), Phi the standard normal CDF."""
    return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))


def gelu_tanh(z):
    """GELU's tanh approximation (torch's approximate='tanh')."""
    return 0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


ACTIVATIONS = {None: lambda z: z, "relu": torch.relu, "gelu": gelu, "gelu_tanh": gelu_tanh}


def linear(input, weight, bias=None, *, activation=None):
    """``act(input @ weight^T + bias)``: one matrix product, broadcast over the leading dims."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear: activation must be None, 'relu', 'gelu' or 'gelu_tanh', got {activation!r}")
    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    z = torch.matmul(input.to(compute), weight.to(compute).t())
    if bias is not None:
        z = z + bias.to(compute)
    return ACTIVATIONS[activation](z).to(input.dtype)
