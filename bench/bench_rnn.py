"""pytest-benchmark suite for the RNN: tritonprop vs the Python loop over time vs torch.nn.RNN (cuDNN).

bench/harness.py times each row.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import IMPLS, MODES
from tritonprop.bench.cases_rnn import rnn_cases
from tritonprop.bench.harness import benchmark_case

CASES = rnn_cases(timing.bench_device())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_rnn(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
