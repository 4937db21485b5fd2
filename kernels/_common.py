"""Helpers shared by every kernels module: autotuning, launching, device facts, accumulator types,
block sizes, TF32, and the layout planning that lets a kernel address strided tensors in place.

Layout planning
---------------
A kernel that walks tensors elementwise (or walks one axis of them) needs one stride per axis it
addresses. Adjacent dims merge into one axis wherever, in every tensor, stepping the outer dim by
one is the same as stepping the inner dim through its whole extent: a contiguous tensor becomes
one axis of stride 1, a transposed matrix stays two axes, and the N, H and W dims of a
channels_last (N, C, H, W) tensor, taken without C, become one axis of stride C. `merge_dims` is
that rule, written once; each kernels module asks it for the axes it needs (batchnorm: two
reduction axes, layernorm: two row axes and one column axis, cross_entropy: one outer and one
inner axis). `plan` pads the result to the MAX_DIMS axes of the elementwise-style kernels
(activations, dropout, the partials reduction), which turn their visit index into axis indices
with `unravel` and into offsets with `strided_offsets`.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from tritonprop import backend, recording


def autotune(configs, key, **kwargs):
    """`triton.autotune`, except that under the interpreter only the first config is kept.

    With more than one config the interpreter tries to benchmark them and fails when the machine
    has no GPU driver ("0 active drivers"); the first config must therefore be a sound default.
    """
    if backend.interpreting():
        configs = configs[:1]
    return triton.autotune(configs=configs, key=key, **kwargs)


# While a launch function runs for its allocations only (see `allocations_only`): the list of
# the kernels whose launches were skipped; None otherwise.
_ALLOCATIONS_ONLY = contextvars.ContextVar("tritonprop_allocations_only", default=None)


def _skip_launch(*args, **kwargs):
    return None


class Launch(NamedTuple):
    """One kernel launch as `captured_launches` records it, instead of running it."""
    kernel: object  # a JITFunction, or an Autotuner around one
    grid: object  # a tuple, or a callable of the launch's meta-parameters (autotuned kernels)
    args: tuple
    kwargs: dict


class _Capture(NamedTuple):
    launches: list
    sm_count: int


# The capture in progress, if any (see `captured_launches`).
_CAPTURE = contextvars.ContextVar("tritonprop_capture", default=None)


def launch(kernel, grid):
    """``kernel[grid]``: every launch function starts its kernels through this one place.

    Inside `allocations_only` it notes the kernel and returns a call that does nothing, so that a
    launch function run on fake tensors (torch.compile, torch.export, opcheck) gives its outputs'
    shapes, dtypes and strides without running a kernel. Inside `captured_launches` the call
    records the launch. A launch that runs is counted by any active `tritonprop.record()`.
    """
    capture = _CAPTURE.get()
    if capture is not None:
        return lambda *args, **kwargs: capture.launches.append(Launch(kernel, grid, args, kwargs))
    skipped = _ALLOCATIONS_ONLY.get()
    if skipped is not None:
        skipped.append(kernel)
        return _skip_launch
    if recording.ACTIVE:
        recording.count_launch(kernel)
    return kernel[grid]


@contextlib.contextmanager
def captured_launches(sm_count: int):
    """Record every launch made inside, as a list of `Launch`, instead of running it.

    The static sm_90 report (bench/static_sm90.py) runs ops on meta tensors inside this, on a
    machine without a GPU; `sm_count` stands in for a GPU's (for `parallel_programs`).
    """
    capture = _Capture([], sm_count)
    token = _CAPTURE.set(capture)
    try:
        yield capture.launches
    finally:
        _CAPTURE.reset(token)


def capturing() -> bool:
    """Whether launches are being recorded by `captured_launches` rather than run."""
    return _CAPTURE.get() is not None


def interpreted_run() -> bool:
    """Whether launches run under Triton's interpreter now (and are not captured for the sm_90
    report). Each program then costs Python time, whatever its tile size, so launch plans aim at
    few, large programs instead of filling a GPU's SMs."""
    return backend.interpreting() and _CAPTURE.get() is None


def allocating_only() -> bool:
    """Whether launches are being skipped by `allocations_only` (the tensors may be fake)."""
    return _ALLOCATIONS_ONLY.get() is not None


@contextlib.contextmanager
def allocations_only():
    """Run launch functions for their allocations alone: the fake (meta) implementation of every
    tritonprop custom op is its launch function run on fake tensors inside this context.

    Yields the list of the kernels whose launches it skipped, in launch order (the host-overhead
    benchmark, bench/host_overhead.py, counts them).
    """
    skipped = []
    token = _ALLOCATIONS_ONLY.set(skipped)
    try:
        yield skipped
    finally:
        _ALLOCATIONS_ONLY.reset(token)


def _torch_scratch(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def ensure_scratch_allocator() -> None:
    """Kernels that build tensor descriptors on the device (TMA loads) need a little global
    scratch memory per launch, which Triton asks of the allocator that `triton.set_allocator`
    set. Unless the user has set one, that is torch's caching allocator."""
    from triton.runtime._allocation import NullAllocator, _allocator

    if isinstance(_allocator.get(), NullAllocator):
        triton.set_allocator(_torch_scratch)


# (kernel, configs, key) -> the autotuned kernel that `launch_tuned` built for them.
_TUNED: dict = {}


def launch_tuned(kernel, grid, configs, key):
    """`launch(kernel, grid)` over a short list of tile configs, each a dict of constexpr values
    plus num_warps and num_stages, the launch function's own choice first.

    Compiled, Triton's autotuner times every config the first time it meets a new value of the
    `key` arguments (and of the tensors' dtypes) and keeps the fastest. Under the interpreter
    `autotune` keeps the first config only. `grid` is a function of the chosen config's values
    (`meta["BLOCK_M"]`, ...). The static sm_90 report compiles every config of every list.
    """
    configs = tuple(tuple(sorted(config.items())) for config in configs)
    cache_key = (id(kernel), configs, tuple(key))
    tuned = _TUNED.get(cache_key)
    if tuned is None:
        tuned = _TUNED[cache_key] = autotune(
            [triton.Config({name: value for name, value in config if name not in ("num_warps", "num_stages")},
                           num_warps=dict(config)["num_warps"], num_stages=dict(config)["num_stages"])
             for config in configs], key=list(key))(kernel)
    return launch(tuned, grid)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def streaming_multiprocessors(device: torch.device) -> int:
    """How many SMs a launch on `device` spreads over: the GPU's (or, inside `captured_launches`,
    the captured GPU's), and 1 off CUDA or under the interpreter, where programs run one by one."""
    capture = _CAPTURE.get()
    if capture is not None:
        return capture.sm_count
    if device.type != "cuda" or backend.interpreting():
        return 1
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


# H100 / H200 (compute capability 9.0) per-SM limits, from CUDA's occupancy tables.
REGISTERS_PER_SM = 65536
REGISTER_ALLOCATION_UNIT = 256  # registers are given to a warp in blocks of 256
MAX_WARPS_PER_SM = 64
MAX_CTAS_PER_SM = 32
SHARED_PER_SM = 228 * 1024
SHARED_RESERVED_PER_CTA = 1024  # the driver keeps 1 KB of each CTA's shared memory


def ctas_per_sm(registers: int, shared: int, num_warps: int) -> int:
    """How many CTAs of a compiled kernel fit on one sm_90 SM at once: the least of the register,
    shared memory, warp and CTA limits. A persistent kernel whose programs meet at a grid barrier
    may launch at most this many per SM."""
    per_warp = -(-max(registers, 1) * 32 // REGISTER_ALLOCATION_UNIT) * REGISTER_ALLOCATION_UNIT
    by_registers = (REGISTERS_PER_SM // per_warp) // num_warps
    by_shared = SHARED_PER_SM // (shared + SHARED_RESERVED_PER_CTA)
    by_warps = MAX_WARPS_PER_SM // num_warps
    return max(0, min(by_registers, by_shared, by_warps, MAX_CTAS_PER_SM))


def parallel_programs(device: torch.device) -> int:
    """How many programs a split reduction should aim for to fill the device.

    Under the interpreter every program costs Python time, so a handful is the right target.
    """
    return 4 * streaming_multiprocessors(device)


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


# ----------------------------------------------------------------------------------------------
# Block sizes and TF32
# ----------------------------------------------------------------------------------------------


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for a launch grid: triton.cdiv's value, without its host cost (in Triton 3.6 it
    is a constexpr_function, about 2 us a call, and launch functions call it on every launch)."""
    return -(-a // b)


def _next_pow2(n: int) -> int:
    """The smallest power of two >= n, and 1 for n <= 1 (triton.next_power_of_2(0) is 0, no block size).

    Plain Python: triton.next_power_of_2 is a constexpr_function, whose call costs ~2 us on the host.
    """
    return 1 << (max(int(n), 1) - 1).bit_length()


def _block(n: int, lo: int, hi: int) -> int:
    """A power of two covering n, clamped to [lo, hi] (tl.dot needs every tile side >= 16)."""
    return max(lo, min(hi, _next_pow2(n)))


def _allow_tf32(flag: str) -> bool:
    """torch's TF32 switch for float32 dots, the one that torch's own op follows: 'cudnn' for
    convolutions and RNNs, 'matmul' (cuBLAS) for linear layers and attention."""
    if flag == "cudnn":
        return torch.backends.cudnn.allow_tf32
    if flag == "matmul":
        return torch.backends.cuda.matmul.allow_tf32
    raise ValueError(f"_allow_tf32: flag must be 'cudnn' or 'matmul', got {flag!r}")


# ----------------------------------------------------------------------------------------------
# Layout planning (host side) and strided addressing (device side); see the module docstring
# ----------------------------------------------------------------------------------------------

# Axes that `plan` gives an elementwise-style kernel; a view needing more is staged through copies.
MAX_DIMS = 4


def merge_dims(shape, dims, strides) -> list:
    """Merge the dims `dims` (outermost first) of same-shaped tensors into as few axes as possible.

    `strides` holds one stride tuple per tensor. Returns the axes, outermost first, each as
    ``[size, [stride per tensor]]``. Size-1 dims are dropped (their stride means nothing). Dim d
    continues the axis before it when, in every tensor, that axis's stride equals d's stride times
    d's size; the merged axis then steps by d's stride.
    """
    axes = []
    for d in dims:
        if shape[d] == 1:
            continue
        if axes and all(axis_stride == s[d] * shape[d] for axis_stride, s in zip(axes[-1][1], strides)):
            axes[-1][0] *= shape[d]
            axes[-1][1] = [s[d] for s in strides]
        else:
            axes.append([shape[d], [s[d] for s in strides]])
    return axes


def cached_plan(function):
    """Cache a launch plan: a pure function of shapes, strides and other hashable values, returning
    immutable values.

    A model meets the same few shapes again and again, so a plan costs a lookup instead of a few
    us of Python per launch. Symbolic sizes (fake tensors under torch.compile's dynamic shapes)
    cannot be hashed; with those the function runs uncached.
    """
    cached = functools.lru_cache(maxsize=1024)(function)

    @functools.wraps(function)
    def lookup(*args):
        try:
            return cached(*args)
        except TypeError:
            return function(*args)

    return lookup


class Layout(NamedTuple):
    sizes: tuple  # (D0, D1, D2, D3), D3 innermost
    strides: tuple  # one (s0, s1, s2, s3) per tensor
    flat: bool  # every tensor dense in the visit order: element k at offset k


def plan(tensors, order) -> Layout | None:
    """The MAX_DIMS axes of same-shaped `tensors` whose dims are visited in `order` (outermost first).

    Returns None when more than MAX_DIMS axes remain after merging. Cached (`cached_plan`).
    """
    return _plan(tensors[0].shape, tuple(t.stride() for t in tensors), tuple(order))


@cached_plan
def _plan(shape, strides, order) -> Layout | None:
    axes = merge_dims(shape, order, strides)
    if len(axes) > MAX_DIMS:
        return None
    flat = len(axes) == 0 or (len(axes) == 1 and all(s == 1 for s in axes[0][1]))
    axes = [[1, [0] * len(strides)]] * (MAX_DIMS - len(axes)) + axes
    sizes = tuple(size for size, _ in axes)
    per_tensor = tuple(tuple(axis_strides[k] for _, axis_strides in axes) for k in range(len(strides)))
    return Layout(sizes, per_tensor, flat)


@triton.jit
def unravel(index, D1, D2, D3):
    """Visit index -> its indices (i0, i1, i2, i3) on axes of sizes (D0, D1, D2, D3), D3 innermost."""
    i3 = index % D3
    rest = index // D3
    i2 = rest % D2
    rest = rest // D2
    return rest // D1, rest % D1, i2, i3


@triton.jit
def strided_offsets(i0, i1, i2, i3, stride0, stride1, stride2, stride3):
    # The indices are int64 (derived from an int64 visit index), so the offsets are too.
    return i0 * stride0 + i1 * stride1 + i2 * stride2 + i3 * stride3
