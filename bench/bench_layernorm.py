"""pytest-benchmark suite for LayerNorm: tritonprop vs the naive reference vs torch native.

    pytest bench/bench_layernorm.py -q                        # tiny shapes under the interpreter on a CPU
    pytest bench/bench_layernorm.py --benchmark-json=ln.json  # BENCHMARKS.md shapes on a GPU

bench/harness.py times each row; bench/report.py writes the same comparison as a table once the
cases are registered in bench/cases.py.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import IMPLS, MODES
from tritonprop.bench.cases_layernorm import layer_norm_cases
from tritonprop.bench.harness import benchmark_case

CASES = layer_norm_cases(timing.bench_device())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_layer_norm(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
