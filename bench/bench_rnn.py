"""pytest-benchmark suite for the RNN, LSTM and GRU: tritonprop vs the Python loop over time vs torch.nn's
(cuDNN).

bench/harness.py times each row.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import IMPLS, MODES
from tritonprop.bench.cases_rnn import gru_cases, lstm_cases, rnn_cases
from tritonprop.bench.harness import benchmark_case

CASES = [case for cases in (rnn_cases, lstm_cases, gru_cases) for case in cases(timing.bench_device())]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_rnn(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
