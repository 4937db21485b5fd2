"""pytest-benchmark suite for attention: tritonprop vs the naive reference vs SDPA (cuDNN, and on
CUDA FlashAttention-2 and memory-efficient attention), forward and forward + backward, bf16.

bench/harness.py times each row; speedup_vs_torch is against SDPA-cuDNN measured in the same run.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import MODES
from tritonprop.bench.cases_attention import attention_cases, attention_impls
from tritonprop.bench.harness import benchmark_case

DEVICE = timing.bench_device()
CASES = attention_cases(DEVICE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", attention_impls(DEVICE))
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_attention(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
