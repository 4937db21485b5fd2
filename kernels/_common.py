"""Launch helpers shared by every kernels module: autotuning, launching, device facts, accumulator types."""
from __future__ import annotations

import contextlib
import contextvars
import functools

import torch
import triton
import triton.language as tl

from tritonprop import backend


def autotune(configs, key, **kwargs):
    """`triton.autotune`, except that under the interpreter only the first config is kept.

    With more than one config the interpreter tries to benchmark them and fails when the machine
    has no GPU driver ("0 active drivers"); the first config must therefore be a sound default.
    """
    if backend.interpreting():
        configs = configs[:1]
    return triton.autotune(configs=configs, key=key, **kwargs)


# True while a launch function runs for its allocations only (see `allocations_only`).
_ALLOCATIONS_ONLY = contextvars.ContextVar("tritonprop_allocations_only", default=False)


def _skip_launch(*args, **kwargs):
    return None


def launch(kernel, grid):
    """``kernel[grid]``: every launch function starts its kernels through this one place.

    Inside `allocations_only` it returns a call that does nothing, so that a launch function run
    on fake tensors (torch.compile, torch.export, opcheck) gives its outputs' shapes, dtypes and
    strides without running a kernel.
    """
    if _ALLOCATIONS_ONLY.get():
        return _skip_launch
    return kernel[grid]


@contextlib.contextmanager
def allocations_only():
    """Run launch functions for their allocations alone: the fake (meta) implementation of every
    tritonprop custom op is its launch function run on fake tensors inside this context."""
    token = _ALLOCATIONS_ONLY.set(True)
    try:
        yield
    finally:
        _ALLOCATIONS_ONLY.reset(token)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def parallel_programs(device: torch.device) -> int:
    """How many programs a split reduction should aim for to fill the device.

    Under the interpreter every program costs Python time, so a handful is the right target.
    """
    if device.type != "cuda" or backend.interpreting():
        return 4
    return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def accumulator_dtype(dtype: torch.dtype):
    """fp64 inputs accumulate in fp64 (gradcheck needs it); everything else in fp32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def accumulator_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@triton.jit
def dot_accumulate(a, b, acc, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr):
    """acc + a @ b, accumulated in acc's dtype (fp32, or fp64 for fp64 operands).

    UPCAST_OPERANDS works around the interpreter's wrong bf16 `tl.dot` (errors around 1e10 in
    Triton 3.6): bf16 operands are widened to fp32 first, which is exact. Compiled kernels never
    set it.
    """
    if UPCAST_OPERANDS:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=acc.dtype)


def dot_options(dtype: torch.dtype, allow_tf32: bool) -> dict:
    """Constexpr arguments of `dot_accumulate` for operands of `dtype`.

    float32 follows the caller's TF32 flag (torch's cuDNN or cuBLAS flag, by op), as torch does;
    the interpreter computes in full precision either way.
    """
    tf32 = dtype == torch.float32 and allow_tf32 and not backend.interpreting()
    return dict(
        INPUT_PRECISION="tf32" if tf32 else "ieee",
        UPCAST_OPERANDS=dtype == torch.bfloat16 and backend.interpreting(),
    )


@triton.jit
def chan_merge(count, mean, m2, part_count, part_mean, part_m2):
    """Merge the statistics (count, mean, M2 = sum of squared deviations) of two disjoint sets.

    Chan et al.'s pairwise update is exact in exact arithmetic and, unlike E[x^2] - E[x]^2, does
    not cancel catastrophically when |mean| >> std. Empty parts (count 0) leave the totals as they are.
    """
    new_count = count + part_count
    delta = part_mean - mean
    share = part_count / tl.maximum(new_count, 1.0)
    return new_count, mean + delta * share, m2 + part_m2 + delta * delta * count * share
