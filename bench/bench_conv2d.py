"""pytest-benchmark suite for conv2d: tritonprop vs unfold (im2col + matmul) vs cuDNN.

Includes the fused conv + bias + ReLU epilogue against cuDNN's conv followed by the separate ops.
bench/harness.py times each row; bench/report.py writes the same comparison as a table.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import cases, timing
from tritonprop.bench.harness import benchmark_case

CASES = cases.conv2d_cases(timing.bench_device())


@pytest.mark.parametrize("mode", cases.MODES)
@pytest.mark.parametrize("impl", cases.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_conv2d(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
