"""The host-overhead benchmark (bench/host_overhead.py): it covers every op, its stubbed calls run
the whole host path and launch nothing, and `tritonprop bench --host` writes its report.

Nothing here asserts a time: the numbers are the benchmark's business, not the tests'.
"""
from __future__ import annotations

import json

import pytest

from tritonprop import cli, registry
from tritonprop.bench import host_overhead
from tritonprop.kernels import elementwise
from tritonprop.kernels._common import allocations_only


@pytest.fixture
def kernels_must_not_run(monkeypatch):
    """Any kernel launched for real (``kernel[grid]``) fails the test."""
    kernel_type = type(elementwise.activation_forward_kernel)

    def launched(self, grid):
        raise AssertionError(f"a kernel was launched for real: {self}")

    monkeypatch.setattr(kernel_type, "__getitem__", launched)


def test_every_op_of_the_registry_has_a_sample():
    assert list(host_overhead.SAMPLES) == list(registry.OPS)


@pytest.mark.parametrize("mode", host_overhead.MODES)
@pytest.mark.parametrize("op", list(registry.OPS))
def test_every_stubbed_call_runs_the_host_path_and_launches_nothing(op, mode, kernels_must_not_run):
    # Nothing on the host path reads the unwritten outputs in a way that fails, and ours gives
    # torch's shapes (the outputs, or the gradients in fwd+bwd): stubbed_launches checks them.
    calls = host_overhead.build_calls(op, mode)
    assert host_overhead.stubbed_launches(op, mode, calls) >= 1


def test_the_launches_counted_are_the_kernels_skipped(kernels_must_not_run):
    calls = host_overhead.build_calls("relu", "fwd+bwd")
    with allocations_only() as skipped:
        calls["tritonprop"]()
    assert skipped == [elementwise.activation_forward_kernel, elementwise.activation_backward_kernel]
    assert host_overhead.stubbed_launches("relu", "fwd+bwd", calls) == 2


def test_each_row_holds_both_times_and_the_verdict(kernels_must_not_run):
    rows = host_overhead.measure([("gelu", "fwd"), ("relu", "fwd+bwd")], repeats=4, warmup=1)
    assert [(row["op"], row["mode"], row["launches"], row["calls"]) for row in rows] == [
        ("gelu", "fwd", 1, 4), ("relu", "fwd+bwd", 2, 4)]
    for row in rows:
        assert row["tritonprop_us"] > 0 and row["torch_us"] > 0
        assert row["over_torch_us"] == pytest.approx(row["tritonprop_us"] - row["torch_us"])
        assert row["meets_target"] == (row["over_torch_us"] <= host_overhead.TARGET_OVER_TORCH_US)


def test_bench_host_writes_the_report(tmp_path, monkeypatch, capsys):
    # The quick setting, cut further: this checks the report, not the numbers.
    monkeypatch.setattr(host_overhead, "time_calls", lambda calls_by_row, repeats, warmup: {
        row: {impl: [[1000, 3000], [5000]] for impl in calls} for row, calls in calls_by_row.items()})
    assert cli.main(["bench", "--host", "--ops", "relu,nll_loss", "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "host-overhead.json").read_text())["rows"]
    assert [(row["op"], row["mode"]) for row in rows] == [("relu", "fwd"), ("relu", "fwd+bwd"), ("nll_loss", "fwd"),
                                                          ("nll_loss", "fwd+bwd")]
    # The lowest block median, and the median of all calls.
    assert all(row["tritonprop_us"] == row["torch_us"] == 2.0 and row["meets_target"] for row in rows)
    assert all(row["tritonprop_median_all_us"] == row["torch_median_all_us"] == 3.0 for row in rows)
    table = (tmp_path / "host-overhead.md").read_text()
    assert "| relu | fwd+bwd | 2 | 2.0 | 2.0 | +0.0 | met |" in table
    assert "| relu | fwd+bwd |" in capsys.readouterr().out


def test_an_unknown_op_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        host_overhead.parse_args(["--ops", "relu,conv3d"])
    assert "--ops: unknown conv3d; choose from conv2d, batch_norm" in capsys.readouterr().err
