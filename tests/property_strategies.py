"""Hypothesis strategies for the property suites: shapes that hit the kernels' ragged edges,
memory layouts, dtypes, and seeded tensors built in a chosen layout.

A tensor is drawn as a `Spec` (shape, dtype, layout, seed), not as values: hypothesis shrinks a
failure to the smallest shape and simplest layout, and the printed example says how to rebuild it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

# Sizes a kernel mishandles if it assumes full blocks: 0 and 1, small primes, and the sizes on
# either side of the smallest tile (16: linear, conv2d, rnn and attention clamp tiles to >= 16;
# 32 is the next power of two). Kept tiny because every kernel runs under the interpreter.
SMALL_SIZES = (1, 2, 3, 5, 7)
EDGE_SIZES = (15, 16, 17, 33)
# The elementwise and dropout kernels take 1024 (elementwise) or 256 groups (dropout) per block.
FLAT_EDGE_SIZES = (255, 257, 1023, 1025)

VALID_FLOATS = (torch.float64, torch.float32)
LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Spec:
    """How to build one tensor argument: logical shape, dtype, memory layout and a value seed."""

    shape: tuple
    dtype: torch.dtype
    layout: str = "contiguous"
    seed: int = 0
    low: float = -2.0
    high: float = 2.0

    def __repr__(self):
        dtype = str(self.dtype).removeprefix("torch.")
        return f"Spec({list(self.shape)}, {dtype}, {self.layout!r}, seed={self.seed})"


def layouts_for(ndim: int) -> tuple:
    """The layouts a tensor of `ndim` dims can be given as a view of some base tensor."""
    if ndim == 0:
        return ("contiguous",)
    options = ["contiguous", "sliced", "expanded"]
    if ndim >= 2:
        options.append("transposed")
    if ndim == 4:
        options.append("channels_last")
    return tuple(options)


def _base_shape(shape, layout):
    shape = list(shape)
    if layout == "sliced":
        shape[-1] = 2 * shape[-1]
    elif layout == "expanded":
        shape[0] = 1
    elif layout == "transposed":
        shape[-1], shape[-2] = shape[-2], shape[-1]
    elif layout == "channels_last":
        shape = [shape[0], shape[2], shape[3], shape[1]]
    return shape


def view_of(base: torch.Tensor, spec: Spec) -> torch.Tensor:
    """The tensor `spec` describes, as a differentiable view of `base` (made by `base_of`)."""
    if spec.layout == "sliced":
        return base[..., ::2]
    if spec.layout == "expanded":
        return base.expand(spec.shape)
    if spec.layout == "transposed":
        return base.transpose(-1, -2)
    if spec.layout == "channels_last":
        return base.permute(0, 3, 1, 2)
    return base


def base_of(spec: Spec) -> torch.Tensor:
    """A contiguous tensor of seeded values whose `view_of` has the spec's shape and layout.

    Gradients are taken with respect to the base, so a stride-0 or strided view still gets a
    gradient checked (summed over the broadcast dim for an expanded one).
    """
    generator = torch.Generator().manual_seed(spec.seed)
    shape = _base_shape(spec.shape, spec.layout)
    if spec.dtype == torch.bool:
        return torch.rand(shape, generator=generator) < 0.5
    if not spec.dtype.is_floating_point:
        return torch.randint(int(spec.low), int(spec.high), shape, generator=generator).to(spec.dtype)
    values = torch.rand(shape, generator=generator, dtype=torch.float64) * (spec.high - spec.low) + spec.low
    return values.to(spec.dtype)


def numel(shape) -> int:
    return math.prod(shape)


seeds = st.integers(0, 2**16)


@st.composite
def shapes(draw, min_dims=1, max_dims=3, max_numel=400, edge_dim=-1):
    """Small shapes of 1 and primes, sometimes with a block-edge size at `edge_dim`, and
    sometimes empty (a 0 size in one dim: one draw in eight, as empty tensors test little else)."""
    ndim = draw(st.integers(min_dims, max_dims))
    shape = [draw(st.sampled_from(SMALL_SIZES)) for _ in range(ndim)]
    if ndim and draw(st.booleans()):
        shape[edge_dim] = draw(st.sampled_from(EDGE_SIZES))
    if ndim and draw(st.integers(0, 7)) == 0:
        shape[draw(st.integers(0, ndim - 1))] = 0
    while numel(shape) > max_numel:
        largest = max(range(ndim), key=lambda i: shape[i])
        shape[largest] = max(1, shape[largest] // 2)
    return tuple(shape)


@st.composite
def specs(draw, shape, dtype, layouts=None):
    """A Spec of a fixed shape and dtype in any layout that shape allows."""
    options = layouts or layouts_for(len(shape))
    return Spec(tuple(shape), dtype, draw(st.sampled_from(options)), draw(seeds))


def valid_dtypes(forward_only_too=True):
    """float64 and float32 mostly (they get gradients checked); float16 and bfloat16 sometimes."""
    choices = list(VALID_FLOATS) * 3 + (list(LOW_PRECISION) if forward_only_too else [])
    return st.sampled_from(choices)
