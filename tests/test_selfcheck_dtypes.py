"""The self-check in several dtypes (`python -m tritonprop.selfcheck --dtypes bf16,fp16,fp32`), the
smoke stage of bench/device_check.sh, and that script's own consistency."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tritonprop import ops, selfcheck

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("label", list(selfcheck.CASES))
def test_every_case_builds_its_floating_tensors_in_the_dtype(label, dtype):
    torch.manual_seed(0)
    wide = selfcheck.CASES[label](CPU)
    torch.manual_seed(0)
    narrow = selfcheck.CASES[label](CPU, dtype)
    assert narrow.grad_of == wide.grad_of
    for a, b in zip(narrow.tensors, wide.tensors):
        if b.is_floating_point():
            # The same draw, rounded; the memory layout (channels_last) kept.
            assert a.dtype == dtype and a.stride() == b.stride()
            assert torch.equal(a, b.to(dtype))
        else:
            assert torch.equal(a, b)  # targets keep their dtype


def test_default_run_is_the_float32_check(capsys):
    assert selfcheck.run("cpu", op_names=["gelu"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("relu, gelu forward+backward vs torch on cpu: ok (")


def test_each_dtype_is_checked_and_reported(capsys):
    assert selfcheck.run("cpu", op_names=["gelu", "dropout"], dtypes=["bf16", "fp16", "fp32"])
    lines = capsys.readouterr().out.splitlines()
    runs = [re.match(r"(.+?) +(\w+) forward\+backward vs (torch|torch \(fp32 math\)) on cpu: ok \(", line)
            for line in lines]
    assert all(runs), lines
    assert [(run[1], run[2], run[3]) for run in runs] == [
        (label, dtype, "torch" if dtype == "fp32" else "torch (fp32 math)")
        for label in ("relu, gelu", "dropout") for dtype in ("bf16", "fp16", "fp32")]


def test_a_wrong_16_bit_result_fails(monkeypatch, capsys):
    # Off by 10%: well past eight units of bf16's roundoff, as a wrong index or mask would be.
    monkeypatch.setattr(ops, "gelu", lambda x, approximate="none": F.gelu(x, approximate=approximate) * 1.1)
    assert not selfcheck.run("cpu", op_names=["gelu"], dtypes=["bf16"])
    assert "bf16 forward+backward vs torch (fp32 math) on cpu: FAILED" in capsys.readouterr().out


def test_16_bit_bound_is_relative_in_norm_and_nan_fails():
    bound = selfcheck.RELATIVE_ERROR[torch.bfloat16]
    theirs = torch.linspace(1, 2, 100)
    within = (theirs * (1 + bound / 2)).bfloat16()
    assert selfcheck._check(torch.bfloat16, within, theirs, 1e-4, 1e-4)[0]
    assert not selfcheck._check(torch.bfloat16, theirs.bfloat16() * (1 + 2 * bound), theirs, 1e-4, 1e-4)[0]
    nan = theirs.bfloat16().clone()
    nan[3] = float("nan")
    assert not selfcheck._check(torch.bfloat16, nan, theirs, 1e-4, 1e-4)[0]
    # float32 keeps the elementwise check of the default run.
    assert not selfcheck._check(torch.float32, theirs + 1e-3, theirs, 1e-4, 1e-4)[0]


def test_unknown_dtype_or_op_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        selfcheck.main(["--dtypes", "bf16,fp8"])
    assert exit_info.value.code == 2 and "unknown dtype fp8; choose from bf16, fp16, fp32" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        selfcheck.main(["--ops", "softmax"])
    assert exit_info.value.code == 2 and "'softmax' is not a tritonprop op" in capsys.readouterr().err


def test_device_check_script_parses_and_orders_existing_test_files():
    script = ROOT / "bench" / "device_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    first = text.split('TESTS_FIRST="', 1)[1].split('"', 1)[0].split()
    missing = [name for name in first if not (ROOT / "tests" / f"test_{name}.py").exists()]
    assert not missing, f"bench/device_check.sh runs these test files first, but tests/ lacks them: {missing}"
    assert "python -m tritonprop.selfcheck" in text or "-m tritonprop.selfcheck" in text


def test_the_command_line_takes_dtypes(capsys):
    from tritonprop import cli

    args = cli.build_parser().parse_args(["selfcheck", "--ops", "gelu", "--dtypes", "fp16"])
    assert args.dtypes == ["fp16"]
    assert args.run(args) == 0
    assert re.search(r"relu, gelu fp16 forward\+backward vs torch \(fp32 math\) on \w+: ok \(", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["selfcheck", "--dtypes", "fp8"])
