"""Backend selection, device checks, the autotune wrapper and the CLI."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import tritonprop
from helpers import assert_close
from tritonprop import backend, ops, registry
from tritonprop.kernels import _common
from tritonprop.kernels import batchnorm as K


def test_interpreter_is_on_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert backend.interpreting()


def test_interpreter_env_is_set_before_kernels_are_decorated():
    # A fresh interpreter without CUDA: importing tritonprop alone must be enough.
    code = "import tritonprop.kernels.batchnorm as K, os; print(type(K.batch_norm_merge_stats_kernel).__name__, os.environ.get('TRITON_INTERPRET'))"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["InterpretedFunction", "1"]


# triton.language alone takes the same path as torch._dynamo (which imports it), so it runs
# under -m slow only: each is a whole self-check in a fresh process.
@pytest.mark.parametrize("first", ["torch._dynamo", pytest.param("triton.language", marks=pytest.mark.slow)])
def test_every_op_works_when_triton_was_imported_first(first):
    # torchvision and transformers import torch._dynamo, which imports triton.language and so
    # decorates Triton's own library functions (tl.zeros, tl.sum, tl.rand, ...) before tritonprop
    # can turn the interpreter on. The self-check runs every op, forward and backward, vs torch;
    # dropout, unseeded, must also still drop.
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the kernels compile, the interpreter is not involved")
    code = (f"import {first}\n"
            "import torch, tritonprop\n"
            "from tritonprop import selfcheck, ops\n"
            "assert selfcheck.run('cpu'), 'selfcheck failed'\n"
            "y = ops.dropout(torch.ones(64), 0.5)\n"
            "assert 0 < int((y == 0).sum()) < 64 and set(y.unique().tolist()) <= {0.0, 2.0}\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


def test_reference_backend_routes_around_the_kernels(monkeypatch):
    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("the Triton kernel ran under TRITONPROP_BACKEND=reference")

    monkeypatch.setattr(K, "forward", kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    x = torch.randn(4, 3, 5, requires_grad=True)
    rm, rv = torch.zeros(3), torch.ones(3)
    rm_t, rv_t = rm.clone(), rv.clone()
    y = ops.batch_norm(x, rm, rv, training=True)
    assert_close(y, F.batch_norm(x, rm_t, rv_t, training=True))
    assert_close(rm, rm_t, name="running_mean")
    y.sum().backward()
    assert x.grad is not None
    assert all(mode.startswith("reference") for mode in backend.describe()["ops"].values())


def test_unknown_backend_is_an_error(monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "cudnn")
    with pytest.raises(ValueError, match="TRITONPROP_BACKEND='cudnn' is not a backend"):
        ops.batch_norm(torch.randn(4, 3), None, None, training=True)


def test_mixed_devices_are_named():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="input is on cpu and weight is on meta"):
        ops.batch_norm(x, None, None, torch.ones(3, device="meta"), training=True)


def test_cpu_tensor_while_kernels_are_compiled_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backend, "interpreting", lambda: False)
    with pytest.raises(RuntimeError, match="input is a CPU tensor, but tritonprop's Triton kernels are compiled for CUDA"):
        ops.batch_norm(torch.randn(4, 3), None, None, training=True)


def test_autotune_keeps_only_the_first_config_when_interpreting():
    if not backend.interpreting():
        pytest.skip("compiled kernels keep every config")

    @_common.autotune([triton.Config({"BLOCK": 4}), triton.Config({"BLOCK": 8})], key=["n"])
    @triton.jit
    def fill(out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, offs.to(tl.float32) * 0 + BLOCK, mask=offs < n)

    out = torch.zeros(3)
    fill[(1,)](out, 3)
    assert out.tolist() == [4.0, 4.0, 4.0]
    assert len(fill.configs) == 1


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tritonprop", *args], capture_output=True, text=True)


def test_cli_info_reports_versions_and_op_modes():
    result = _cli("info")
    assert result.returncode == 0, result.stderr
    assert f"tritonprop {tritonprop.__version__}" in result.stdout
    assert f"torch            {torch.__version__}" in result.stdout
    mode = "interpreted" if backend.interpreting() else "compiled"
    # Every op of the registry, a line each, with its mode in one column whatever the op's name.
    rows = result.stdout.split("ops:\n", 1)[1].split("recurrence (", 1)[0].splitlines()
    assert [row.split()[0] for row in rows] == list(registry.OPS)
    assert {row.index(mode) for row in rows} == {rows[0].index(mode)}
    # How the RNN, LSTM and GRU recurrences run here.
    assert "recurrence (rnn, lstm, gru): " + ("per-step" if mode == "interpreted" else "persistent") in result.stdout


def test_cli_selfcheck_passes():
    result = _cli("selfcheck")
    assert result.returncode == 0, result.stdout + result.stderr
    from tritonprop import selfcheck

    for label in selfcheck.CASES:  # one line per case, labelled by the registry ops it checks
        assert re.search(rf"^{re.escape(label)} +forward\+backward vs torch on \w+: ok \(", result.stdout, re.M)
    assert result.stdout.count(": ok (") == len(selfcheck.CASES)


def test_cli_bench_passes_its_options_to_the_report():
    result = _cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--out" in result.stdout
