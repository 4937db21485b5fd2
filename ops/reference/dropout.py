"""Dropout in plain torch autograd, with the very mask of tritonprop's kernel: the oracle for it.

    y = x * m / (1 - p),   m_i = 1 (kept) with probability 1 - p, else 0

Autograd derives the backward, dL/dx = dL/dy * m / (1 - p); activations_numpy.py derives it by hand.

The random mask, shared with kernels/dropout.py:
  * every training call draws a fresh seed from torch's generator for the input's device
    (`draw_seed`), so `torch.manual_seed` reproduces a run and consecutive calls differ;
  * the element with logical (row-major) index L takes uniform number L % 4 of Philox4x32-10
    keyed by the seed at counter L // 4, converted to [0, 1) as Triton's `tl.rand4x` does;
  * it is kept when that uniform is >= p.

`philox4x32` writes Philox out in numpy, so this reference rebuilds the kernel's mask bit for
bit: tests compare the two exactly, and with TRITONPROP_BACKEND=reference a seeded run drops the
same elements as with the kernels. Low-precision inputs are computed in float32 and cast back.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Philox4x32's constants (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011):
# the key increments (Weyl sequence) and the round multipliers.
PHILOX_KEY_A = np.uint64(0x9E3779B9)
PHILOX_KEY_B = np.uint64(0xBB67AE85)
PHILOX_ROUND_A = np.uint64(0xD2511F53)
PHILOX_ROUND_B = np.uint64(0xCD9E8D57)
PHILOX_ROUNDS = 10
LOW_32 = np.uint64(0xFFFFFFFF)
# Triton's int32 -> [0, 1) factor: the largest with (2**31 - 1) * factor < 1 in float32.
UNIFORM_FACTOR = np.float32(4.6566127342e-10)


def draw_seed(device) -> torch.Tensor:
    """A fresh seed from torch's default generator for `device`, as a one-element int64 tensor.

    Drawn on the device itself, so a CUDA call neither synchronizes nor touches the CPU generator.
    """
    return torch.randint(2**63 - 1, (1,), dtype=torch.int64, device=device)


def _mul_hi_lo(a, b):
    # Both factors are below 2**32, so the whole product fits in a uint64.
    product = a * b
    return product >> np.uint64(32), product & LOW_32


def philox4x32(seed: int, counters: np.ndarray):
    """The four 32-bit words of Philox4x32-10 for each counter (as (lo, hi, 0, 0)) under key `seed`."""
    c0, c1 = counters & LOW_32, counters >> np.uint64(32)
    c2 = c3 = np.zeros_like(counters)
    k0, k1 = np.uint64(seed) & LOW_32, np.uint64(seed) >> np.uint64(32)
    for _ in range(PHILOX_ROUNDS):
        hi_b, lo_b = _mul_hi_lo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + PHILOX_KEY_A) & LOW_32, (k1 + PHILOX_KEY_B) & LOW_32
    return c0, c1, c2, c3


def to_uniform(words: np.ndarray) -> np.ndarray:
    """32-bit words -> float32 in [0, 1), as Triton converts them: read as int32, fold the
    negatives onto the non-negatives (-w - 1), scale by UNIFORM_FACTOR."""
    signed = words.astype(np.uint32).view(np.int32)
    folded = np.where(signed < 0, -signed - 1, signed)
    return folded.astype(np.float32) * UNIFORM_FACTOR


def keep_mask(shape, seed: torch.Tensor, p: float, device) -> torch.Tensor:
    """The boolean keep mask of dropout with `seed` and `p` over a tensor of `shape`."""
    numel = math.prod(shape)
    words = philox4x32(int(seed.item()), np.arange((numel + 3) // 4, dtype=np.uint64))
    # Row g of the stack holds the four uniforms of counter g: elements 4g .. 4g+3.
    uniforms = np.stack([to_uniform(w) for w in words], axis=1).reshape(-1)[:numel]
    return torch.from_numpy(uniforms >= np.float32(p)).reshape(tuple(shape)).to(device)


def dropout(input, p=0.5, training=True, inplace=False, *, seed=None):
    """F.dropout's semantics with the kernel's mask; `seed` defaults to a fresh `draw_seed`."""
    if not training or p == 0 or input.numel() == 0:
        return input
    if seed is None:
        seed = draw_seed(input.device)
    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    # The scale as the kernel receives it, a float32 number (1/(1-p) is never used at p = 1).
    scale = torch.tensor(1.0 / (1.0 - p) if p < 1 else 0.0, dtype=torch.float32).to(compute)
    keep = keep_mask(input.shape, seed, p, input.device)
    # input * mask, not a select: a dropped inf or nan becomes nan, as in torch.
    y = (input.to(compute) * torch.where(keep, scale, 0.0)).to(input.dtype)
    return input.copy_(y) if inplace else y
