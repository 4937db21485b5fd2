"""Every kernel compiles for sm_90 (Hopper) on this machine, GPU or not (see compile_for_cuda.py).

The kernel groups are the compile variants of the op registry (tritonprop/registry.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tritonprop import registry

SCRIPT = Path(__file__).with_name("compile_for_cuda.py")
GROUPS = list(registry.groups("compile_variants"))


def _compile(*args):
    env = dict(os.environ, TRITON_INTERPRET="0", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result.stdout


# Two processes, each compiling every other group: one process per group spent a tenth of the
# time importing torch and Triton.
HALVES = [GROUPS[0::2], GROUPS[1::2]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the CUDA tests compile and run every kernel")
@pytest.mark.parametrize("groups", HALVES, ids=lambda groups: ",".join(g.removesuffix("_kernels") for g in groups))
def test_kernels_compile_for_hopper(groups):
    # The quick subset: each group's bf16 variants (attention's every variant alone takes minutes
    # on a cold cache); fp16, fp32 and fp64 compile under -m slow.
    out = _compile("--quick", *groups)
    for group in groups:
        assert f"{group}: " in out and "compiled for sm_90" in out


def test_the_halves_cover_every_group():
    assert sorted(g for half in HALVES for g in half) == sorted(GROUPS)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the CUDA tests compile and run every kernel")
def test_every_kernel_variant_compiles_for_hopper():
    out = _compile()
    for group in GROUPS:
        assert f"{group}: " in out and "compiled for sm_90" in out
