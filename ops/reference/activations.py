"""ReLU and GELU by their formulas, in plain torch autograd: the oracles for the elementwise kernels.

    relu(x)      = 0 where x <= 0, else x          (torch's threshold: nan stays nan, relu'(0) = 0)
    gelu(x)      = x * Phi(x) = x/2 * (1 + erf(x / sqrt 2))
    gelu_tanh(x) = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))

Autograd derives the backwards; activations_numpy.py derives them by hand. Low-precision inputs
are computed in float32 and cast back, as torch's own kernels do.
"""
from __future__ import annotations

import math

import torch

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715


def _compute_dtype(input):
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def relu(input, inplace=False):
    x = input.to(_compute_dtype(input))
    # A select, written as torch's threshold (x <= 0 -> 0): the gradient is exactly 0 at x = 0
    # and passes through at nan, and an infinite upstream gradient is never multiplied by 0.
    y = torch.where(x <= 0, 0.0, x).to(input.dtype)
    return input.copy_(y) if inplace else y


def gelu(input, approximate="none"):
    x = input.to(_compute_dtype(input))
    if approximate == "tanh":
        y = 0.5 * x * (1 + torch.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x)))
    else:
        y = 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))
    return y.to(input.dtype)
