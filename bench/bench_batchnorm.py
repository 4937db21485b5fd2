"""pytest-benchmark suite for BatchNorm2d training: tritonprop vs the naive reference vs torch native.

    pytest bench -q                                   # tiny shapes under the interpreter on a CPU
    pytest bench --benchmark-json=bn.json             # BENCHMARKS.md shapes on a GPU

bench/harness.py times each row; bench/report.py writes the same comparison as a table.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import cases, timing
from tritonprop.bench.harness import benchmark_case

CASES = cases.batch_norm_cases(timing.bench_device())


@pytest.mark.parametrize("mode", cases.MODES)
@pytest.mark.parametrize("impl", cases.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_batch_norm(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
