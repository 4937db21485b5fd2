"""Every kernel compiles for sm_90 (Hopper) on this machine, GPU or not (see compile_for_cuda.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("compile_for_cuda.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the CUDA tests compile and run every kernel")
@pytest.mark.parametrize("kernel_set", [
    "batch_norm", "conv2d", "elementwise", "dropout", "layer_norm", "cross_entropy", "linear", "rnn", "attention",
    # Every attention variant: minutes on a cold cache, so the default run compiles a subset.
    pytest.param("attention-full", marks=pytest.mark.slow),
])
def test_kernels_compile_for_hopper(kernel_set):
    env = dict(os.environ, TRITON_INTERPRET="0", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, str(SCRIPT), kernel_set], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert f"{kernel_set}: " in result.stdout and "compiled for sm_90" in result.stdout
