"""Shared fixtures: the device parameter, the per-dtype tolerance table, a seed, strict float32, the slow marker.

`slow` tests are excluded by the default addopts in pyproject.toml (`-m 'not slow'`); run them
with `pytest -m slow`.
"""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

import tritonprop  # noqa: F401  (sets TRITON_INTERPRET before any kernel is decorated)
from helpers import TOLERANCES
from tritonprop.torchvision_import import import_torchvision

# torchvision imports only through import_torchvision() beside this CPU torch, and transformers
# imports it whenever it is installed: so it is imported here, before any test can import either.
try:
    import_torchvision()
except ImportError:
    pass  # not installed: the tests that build torchvision models skip

# Inductor compiles its C++ in a pool of worker processes sized by the CPU count (read when
# torch._inductor is first imported, by the first torch.compile); the tests already run one
# process per core (pytest-xdist), so each compiles in its own process.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

# torch's OpInfo sample inputs (test_opinfo.py, test_dropout.py) come from torch.testing._internal,
# whose import freezes torch.backends' flags for the whole process (disable_global_flags): a
# plain `torch.backends.cudnn.allow_tf32 = False`, as other tests and `tritonprop selfcheck` write,
# would then raise. It is imported once, here, and the freeze undone (torch.backends is a module
# wrapper, so the flag lives in its functions' globals). It needs expecttest (requirements-dev.txt),
# which a machine running only the kernel tests may lack; the OpInfo tests skip there.
try:
    import torch.testing._internal.common_utils  # noqa: F401
except ImportError:
    pass
else:
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """cpu always (kernels interpreted); cuda when present (kernels compiled)."""
    if request.param == "cpu" and not tritonprop.backend.interpreting():
        pytest.skip("CPU tensors need the Triton interpreter; this process compiles kernels for CUDA")
    return torch.device(request.param)


@pytest.fixture
def tolerance():
    """The per-dtype tolerance table: dtype -> dict(atol=..., rtol=...)."""
    return TOLERANCES


@pytest.fixture(autouse=True)
def seed():
    """Every test starts from the same seed, so failures reproduce."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0


@pytest.fixture
def compiled_plans(monkeypatch):
    """The launch plans a GPU runs, under the interpreter too. There, conv2d, batch norm and the
    partial sums plan few, large tiles (kernels._common.interpreted_run); a test that asks for this
    fixture runs the compiled tile shapes instead, so the CPU suite still checks them."""
    from tritonprop.kernels import batchnorm, conv2d, reduction

    for module in (batchnorm, conv2d, reduction):
        monkeypatch.setattr(module, "interpreted_run", lambda: False)


@pytest.fixture
def strict_float32():
    """float32 matmuls and convolutions in full precision, for the test; the flags are restored after.

    fp32 parity is checked with fp32 tolerances, and TF32 (torch's default for cuDNN convolutions
    and an option for cuBLAS matmuls) would need its own. Both flags are cleared, because the
    kernels follow whichever one torch's own op follows (conv and RNN: cuDNN; linear and
    attention: matmul). A test module opts in with
    ``pytestmark = pytest.mark.usefixtures("strict_float32")``.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def split(monkeypatch):
    """Split the recurrence's K dimension in slices of 16 on small H (H = 17, 20 or 37 takes
    ragged slices, summed by every unit's update), over a grid of several programs, as a GPU's
    plan splits the benchmark shapes (the interpreter's own plan aims at one program)."""
    from tritonprop.kernels import recurrence

    for dtype in recurrence.MAX_BLOCK_K:
        monkeypatch.setitem(recurrence.MAX_BLOCK_K, dtype, 16)
    monkeypatch.setattr(recurrence, "TARGET_PROGRAMS", 8)
    monkeypatch.setattr(recurrence, "INTERPRETED_TARGET_PROGRAMS", 8)
