"""pytest-benchmark suite for BatchNorm2d training: tritonprop vs the naive reference vs torch native.

    pytest bench -q                                   # tiny shapes under the interpreter on a CPU
    pytest bench --benchmark-json=bn.json             # BENCHMARKS.md shapes on a GPU

Every row's extra_info carries the case, GB/s and speedup_vs_torch = t_torch / t_this, with
torch native timed in the same run (by bench/timing.measure) against this row's median. Nothing
is asserted about time. bench/report.py writes the same comparison as a table.
"""
from __future__ import annotations

import functools

import pytest

from tritonprop.bench import cases, timing

DEVICE = timing.bench_device()
CASES = cases.batch_norm_cases(DEVICE)
# Under the interpreter one call takes a few hundred ms and its time means nothing anyway.
ROUNDS = 50 if DEVICE.type == "cuda" else 2


@pytest.mark.parametrize("mode", cases.MODES)
@pytest.mark.parametrize("impl", cases.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_batch_norm(benchmark, device, case, impl, mode):
    callables = case.build(device)
    fn = callables[impl][mode]

    def timed():
        fn()
        timing.synchronize(device)  # the host timer must see the kernels finish, not just launch

    benchmark.group = f"{case.name} {mode}"
    benchmark.extra_info.update(case.describe(), shape=list(case.shape), impl=impl, mode=mode)
    # Each round starts on an idle device, so work queued before it (input creation) is not timed.
    benchmark.pedantic(timed, setup=functools.partial(timing.synchronize, device), rounds=ROUNDS, warmup_rounds=1)
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
