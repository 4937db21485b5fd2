"""How a benchmark callable is timed: compiled on CUDA, or interpreted on the CPU.

On CUDA the median comes from `triton.testing.do_bench` (CUDA events, L2 flushed between
repetitions), after a warm-up call so that JIT compilation and autotuning stay out of it.
On the CPU the kernels run under Triton's interpreter, so the times only show that the harness
works: they say nothing about speed.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from tritonprop import backend

CPU_NOTE = "CPU / interpreter timings: meaningless for speed"


def bench_device() -> torch.device:
    """CUDA when the kernels compile for it; the CPU when they run under Triton's interpreter."""
    if backend.interpreting():
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    raise RuntimeError("TRITON_INTERPRET is off and there is no CUDA device: tritonprop's kernels cannot run here")


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a host timer sees the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, *, quick: bool = False) -> dict:
    """Median time of `fn()` in milliseconds, with the spread and how it was measured.

    `quick` trades precision for time (shorter do_bench windows, fewer CPU repeats).
    """
    fn()  # compile and autotune now, not inside a timed repetition
    synchronize(device)
    if device.type == "cuda":
        import triton.testing

        warmup_ms, rep_ms = (5, 20) if quick else (25, 100)
        times = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all")
        method = f"triton.testing.do_bench(warmup={warmup_ms}, rep={rep_ms}), CUDA events, L2 flushed"
    else:
        times = []
        for _ in range(2 if quick else 5):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        method = f"time.perf_counter, {len(times)} repeats ({CPU_NOTE})"
    return dict(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times), reps=len(times),
                method=method)


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory that one call of `fn` allocates beyond what was allocated before it, in MiB.

    Build the case first: what is allocated then (the inputs) is the baseline, so the number is
    the memory the op needs beyond its inputs, including what it returns (gradients in fwd+bwd).
    CUDA only; on the CPU there is no allocator to ask, and None is returned.
    """
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del result
    return (peak - baseline) / 2**20
