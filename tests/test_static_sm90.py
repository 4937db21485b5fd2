"""The static sm_90 report (bench/static_sm90.py): its checks, and a representative subset of the
benchmark launches compiled for sm_90 without a GPU.

The subset: the linear layer with its bias + GELU epilogue, attention at head dim 64 (forward and
backward), conv2d in bf16 channels_last, LayerNorm, and the LSTM's persistent recurrence (the
engine the RNN and the GRU share; its largest cell). It fails when a 16-bit kernel spills, when a
16-bit kernel with a tl.dot does not use wgmma, or when a launch large enough to matter fills fewer
than half of the 132 SMs. The whole report, which also holds fp32 kernels to zero spills and runs
every cell at both RNN shapes, runs under -m slow.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tritonprop.bench import static_sm90 as S

SUBSET_OPS = "linear,attention,conv2d,layer_norm,lstm"
SUBSET_CASES = ",".join([
    "4096x4096x4096 +bias+gelu-bf16",
    "B4xH16xS4096xD64-bf16",
    "32x64->64x56 3x3 s1-bf16-channels_last",
    "16384x4096-bf16",
    "T256xB64xI256xH512-bf16",
])


def _row(**fields):
    row = dict(case="case", mode="fwd", kernel="k", config="c", dtype="bf16", spill_stores=0, spill_loads=0,
               matmul=True, dot="wgmma", programs=1024, bytes_touched=1 << 30, persistent=False, ctas_per_sm=2)
    row.update(fields)
    return row


def test_occupancy_follows_the_tightest_limit():
    # Registers: 255 per thread round up to 8192 per warp, so 8 warps, 2 CTAs of 4 warps, fit in 65536.
    assert S.ctas_per_sm(255, 0, 4) == 2
    # Shared memory: 144 KB per CTA leaves room for one.
    assert S.ctas_per_sm(32, 144 * 1024, 4) == 1
    # Warps: 64 per SM at 1 warp each would be 64 CTAs, capped at 32.
    assert S.ctas_per_sm(16, 0, 1) == 32
    # Registers round up to 256 per warp: 129 registers count as 136.
    assert S.ctas_per_sm(129, 0, 8) == S.ctas_per_sm(136, 0, 8) == 1


def test_checks_flag_spills_missing_wgmma_and_small_grids():
    assert S.findings([_row()]) == []
    assert "spills" in S.findings([_row(spill_stores=8)])[0]
    assert "mma.sync" in S.findings([_row(dot="mma.sync")])[0]
    assert "CTAs on 132 SMs" in S.findings([_row(programs=32)])[0]
    # fp32 kernels are held to the spill list, not to the 16-bit checks; a small launch may have a small grid.
    assert S.findings([_row(dtype="fp32", spill_stores=8, dot="fma")]) == []
    assert S.spills([_row(dtype="fp32", spill_stores=8)]) != []
    assert S.findings([_row(programs=1, bytes_touched=4096)]) == []
    # A persistent kernel: at least 32 CTAs, all resident at once.
    assert S.findings([_row(programs=32, persistent=True)]) == []
    assert "under 32" in S.findings([_row(programs=16, persistent=True)])[0]
    assert "co-resident" in S.findings([_row(programs=300, persistent=True)])[0]


def _run_report(tmp_path, *arguments):
    environment = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))
    result = subprocess.run([sys.executable, "-m", "tritonprop.bench.static_sm90", "--out", str(tmp_path),
                             "--jobs", "2", *arguments], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((tmp_path / "static-sm90.json").read_text())


def test_representative_subset_compiles_clean_for_sm90(tmp_path):
    report = _run_report(tmp_path, "--ops", SUBSET_OPS, "--cases", SUBSET_CASES)
    rows = report["rows"]
    kernels = {row["kernel"] for row in rows}
    # The subset reached every kernel family it names, each at its real launch configuration.
    assert {"matmul_kernel", "attention_forward_kernel", "attention_backward_dkdv_kernel",
            "attention_backward_dq_kernel", "conv2d_forward_kernel", "conv2d_backward_input_kernel",
            "conv2d_backward_weight_kernel", "layer_norm_forward_kernel", "layer_norm_backward_kernel",
            "recurrence_forward_persistent_kernel", "recurrence_backward_persistent_kernel"} <= kernels
    # The LSTM's recurrence runs persistent, forward and BPTT, on wgmma (the findings above also
    # hold its grid to >= 32 co-resident CTAs, with no spills).
    persistent = {(row["case"].split("-")[0], row["case"].split("-")[1], row["kernel"]) for row in rows
                  if row["persistent"] and row["dot"] == "wgmma"}
    assert persistent == {("lstm", "T256xB64xI256xH512", f"recurrence_{direction}_persistent_kernel")
                          for direction in ("forward", "backward")}
    assert all(row["registers"] > 0 for row in rows)
    assert report["header"]["findings"] == []
    assert report["header"]["spills"] == []
    assert (tmp_path / "static-sm90.md").read_text().startswith("# Static sm_90 report")


@pytest.mark.slow
def test_every_benchmark_launch_compiles_clean_for_sm90(tmp_path):
    report = _run_report(tmp_path)
    assert report["header"]["findings"] == []
    assert report["header"]["spills"] == []
