"""Layer norm by its formula, in plain torch autograd: the oracle for the Triton kernels.

Over the trailing dims given by ``normalized_shape``, for each row x of N values:

    mean = E[x],  var = E[(x - mean)^2]   (biased)
    y    = (x - mean) / sqrt(var + eps) * weight + bias

Low-precision inputs are computed in float32 and cast back, as torch's own kernels do.
"""
from __future__ import annotations

import torch


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(input.dim() - len(normalized_shape), input.dim()))
    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    x = input.to(compute)
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight.to(compute)
    if bias is not None:
        y = y + bias.to(compute)
    return y.to(input.dtype)
