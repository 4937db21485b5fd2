"""The body every pytest-benchmark row shares: time one implementation of one case in one mode.

Each row's extra_info carries the case, its throughput and speedup_vs_torch = t_torch / t_this,
with torch native timed in the same run (by bench/timing.measure) against this row's median.
Nothing is asserted about time.
"""
from __future__ import annotations

import functools

from tritonprop.bench import timing
from tritonprop.bench.cases import Case

# Under the interpreter one call takes a few hundred ms and its time means nothing anyway.
ROUNDS = {"cuda": 50, "cpu": 2}


def benchmark_case(benchmark, device, case: Case, impl: str, mode: str) -> None:
    callables = case.build(device)
    fn = callables[impl][mode]

    def timed():
        fn()
        timing.synchronize(device)  # the host timer must see the kernels finish, not just launch

    benchmark.group = f"{case.name} {mode}"
    benchmark.extra_info.update(case.describe(), shape=list(case.shape), impl=impl, mode=mode)
    # Each round starts on an idle device, so work queued before it (input creation) is not timed.
    benchmark.pedantic(timed, setup=functools.partial(timing.synchronize, device), rounds=ROUNDS[device.type],
                       warmup_rounds=1)
    if not benchmark.enabled:  # --benchmark-disable: ran once, as a smoke test; no stats
        return

    median_ms = benchmark.stats.stats.median * 1e3
    torch_ms = median_ms if impl == "torch" else timing.measure(callables["torch"][mode], device)["median_ms"]
    benchmark.extra_info.update({
        "median_ms": median_ms,
        case.throughput_key: case.throughput(mode, median_ms),
        "speedup_vs_torch": torch_ms / median_ms,
    })
    if device.type != "cuda":
        benchmark.extra_info["note"] = timing.CPU_NOTE
