"""`tritonprop lesson conv` (tritonprop/lessons.py): the table, the agreement check, the interpreter note, bad input."""
from __future__ import annotations

import pytest

from tritonprop import backend, cli, lessons
from tritonprop.ops.reference.conv2d import conv2d_unfold

TINY = ["--sizes", "1,2,5,5,3", "--repeats", "1"]


def _rows(out: str) -> dict:
    """method -> its row's cells, from the table under the size line."""
    lines = out.splitlines()
    start = lines.index("N=1 C=2 H×W=5×5 K=3 R×S=3×3") + 1
    return {line.split()[0]: line for line in lines[start:start + 3]}


def test_lesson_conv_times_the_three_methods_and_they_agree(capsys):
    assert cli.main(["lesson", "conv", *TINY]) == 0
    out = capsys.readouterr().out
    assert out.startswith("What is measured:")
    rows = _rows(out)
    assert list(rows) == ["loop", "unfold", "triton"]
    # Every row has two times and two ratios; unfold is the baseline, the others agree with it.
    for method, row in rows.items():
        assert row.count("s ") >= 2 and row.count("×") >= 2, row
    assert "(the baseline)" in rows["unfold"]
    assert "yes (max |diff|" in rows["loop"] and "yes (max |diff|" in rows["triton"]
    assert "Agreement: at every size the three give the same output and the same gradients" in out
    if backend.interpreting():
        assert "runs under Triton's INTERPRETER" in out
        assert "say nothing about the kernel's speed on a GPU" in out
    else:
        assert "torch.cuda.synchronize()" in out


def test_lesson_conv_reports_a_method_that_disagrees(monkeypatch, capsys):
    """The agreement check can fail: a 'triton' row that is off by 1e-3 says NO, and the exit code is 1."""
    def off_by_a_little(*args):
        return conv2d_unfold(*args) + 1e-3

    methods = [(name, off_by_a_little if name == "triton" else fn, about) for name, fn, about in lessons.METHODS]
    monkeypatch.setattr(lessons, "METHODS", tuple(methods))
    assert cli.main(["lesson", "conv", *TINY]) == 1
    out = capsys.readouterr().out
    assert "NO (max |diff| 1.0e-03)" in _rows(out)["triton"]
    assert "yes" in _rows(out)["loop"]
    assert "Agreement FAILED" in out


@pytest.mark.parametrize("bad", ["1,2,5,5", "1,2,5,5,3,3,3", "1,2,0,5,3", "1,2,five,5,3", "1,2,5,5,-3"])
def test_lesson_conv_rejects_bad_sizes_naming_the_argument(bad, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["lesson", "conv", "--sizes", bad])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "argument --sizes" in err and repr(bad) in err and "N,C,H,W,K" in err


def test_lesson_names_its_lessons(capsys):
    with pytest.raises(SystemExit):
        cli.main(["lesson", "nosuchlesson"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nosuchlesson'" in err and "conv" in err


def test_lesson_conv_refuses_the_reference_backend(monkeypatch, capsys):
    """With TRITONPROP_BACKEND=reference, ops.conv2d is conv2d_unfold: there is no kernel to time."""
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    assert cli.main(["lesson", "conv", *TINY]) == 2
    assert "TRITONPROP_BACKEND=reference" in capsys.readouterr().err
