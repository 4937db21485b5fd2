"""pytest-benchmark suite for cross-entropy: tritonprop vs the naive reference vs torch native.

    pytest bench/bench_cross_entropy.py -q                    # tiny stand-in under the interpreter
    pytest bench/bench_cross_entropy.py --benchmark-json=ce.json   # 16384 x 32000 bf16 on a GPU

bench/harness.py times each row; bench/cases_cross_entropy.py also measures peak memory.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import IMPLS, MODES
from tritonprop.bench.cases_cross_entropy import cross_entropy_cases
from tritonprop.bench.harness import benchmark_case

CASES = cross_entropy_cases(timing.bench_device())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_cross_entropy(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
