"""pytest-benchmark suite for linear: tritonprop vs the naive reference vs cuBLAS.

Includes the fused linear + bias + GELU epilogue against F.linear followed by F.gelu.
bench/harness.py times each row.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import IMPLS, MODES
from tritonprop.bench.cases_linear import linear_cases
from tritonprop.bench.harness import benchmark_case

CASES = linear_cases(timing.bench_device())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_linear(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
