"""Fixtures of the benchmark suites (kept apart from tests/conftest.py: benchmarks are no tests)."""
from __future__ import annotations

import pytest
import torch

from tritonprop.bench import timing


@pytest.fixture(scope="session")
def device() -> torch.device:
    """cuda when the kernels compile for it; cpu when they run under Triton's interpreter."""
    return timing.bench_device()
