"""pytest-benchmark suite for GELU and dropout: tritonprop vs the naive formulas vs torch native.

    pytest bench/bench_elementwise.py -q          # tiny shapes under the interpreter on a CPU

bench/harness.py times each row.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import IMPLS, MODES
from tritonprop.bench.cases_elementwise import elementwise_cases
from tritonprop.bench.harness import benchmark_case

CASES = elementwise_cases(timing.bench_device())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_elementwise(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
