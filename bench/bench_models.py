"""pytest-benchmark suite for whole models: one training step of every registered task on
tritonprop's kernels, on the naive references, and on torch.nn (cuDNN, SDPA); and existing torch
models (torchvision's resnet18, torch.nn.Transformer) converted by ops.convert, against themselves
unconverted.

bench/harness.py times each row; bench/report.py writes the same comparison as a table.
"""
from __future__ import annotations

import pytest

from tritonprop.bench import timing
from tritonprop.bench.case import IMPLS, MODES
from tritonprop.bench.cases_models import converted_model_cases, models_cases
from tritonprop.bench.harness import benchmark_case

CASES = models_cases(timing.bench_device())
# The converted models that cannot run here (resnet18 without torchvision, as on the offline GPU
# machine) show as skipped rows that say why, rather than as rows that are silently absent.
LEFT_OUT = [pytest.param(case, id=case.name, marks=pytest.mark.skip(reason=f"{case.label}: left out, {reason}"))
            for case, reason in converted_model_cases(timing.bench_device()) if reason is not None]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in CASES] + LEFT_OUT)
def test_models(benchmark, device, case, impl, mode):
    benchmark_case(benchmark, device, case, impl, mode)
