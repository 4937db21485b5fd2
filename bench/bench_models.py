"""pytest-benchmark suite for whole models: one training step of every registered task on
tritonprop's kernels, on the naive references, and on torch.nn (cuDNN, SDPA).

bench/harness.py times each row; bench/report.py writes the same comparison as a table.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import IMPLS, MODES
from tritonprop.bench.cases_models import models_cases
from tritonprop.bench.harness import benchmark_case

CASES = models_cases(timing.bench_device())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_models(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
