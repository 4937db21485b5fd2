"""Host overhead per op call: each op's Python time with its kernel launches skipped, beside torch's own op.

    python -m tritonprop.bench.host_overhead --out bench/results     # or `tritonprop bench --host ...`
    python -m tritonprop.bench.host_overhead --ops linear,relu --quick

BENCHMARKS.md's target is "host overhead per op call (CPU, launches stubbed) <= torch's own
dispatch time + 20 us". On a GPU a small model's step is bound by this host time, not by its
kernels, so it is measured here, on the CPU, where it is the same Python.

What is timed, per op of the registry (tritonprop/registry.py) and per mode:

- **tritonprop**: the functional on tiny CPU tensors inside `kernels._common.allocations_only()`.
  The whole host path runs: argument checks, the autocast policy, the backend choice and device
  check, the custom op's dispatch and autograd, the launch functions' layout planning and output
  allocation. Only the launches are skipped, so nothing computes and the time does not depend on
  the sizes; the outputs hold garbage, which nothing reads. Dims are 2 to 8 (a size-1 dim would
  take shortcuts in the layout planning), but for conv2d's batch (below). The `launches` column
  counts the launches skipped per call: on a GPU each costs Triton's own launch time on top
  (argument binding, its cache lookup).
- **torch**: torch's own op on the same tensors, run for real on the CPU. At these sizes its
  compute is about a microsecond, so what is timed is its dispatch: argument parsing, the
  dispatcher, autograd's recording, the allocation. A small model layer's shapes would not do: a
  4x8x8x8 conv2d took 46 us where a 1x2x4x4 one took 7. For the same reason the conv2d sample has
  a batch of one: from a batch of two, torch's CPU convolution takes another path, 40 us a call
  at these sizes, which is not dispatch. torch's CPU RNN steps through time in C++, a few aten
  calls per step (cuDNN makes the sequence one call on a GPU), so the RNN has 2 steps. Meta
  tensors would skip the compute too, but many aten ops' meta kernels are Python
  (torch._meta_registrations): F.linear took about 300 us on meta tensors against 7 us on real
  ones, which times the meta machinery, not the dispatch that a CUDA call pays.
- **modes**: "fwd" is a training forward (the differentiated inputs require grad, so autograd
  records the graph); "fwd+bwd" is that forward and `torch.autograd.grad` of its output for
  those inputs (an upstream gradient of ones).

Each call is timed alone with `time.perf_counter_ns`, after a warm-up, in blocks of fifty calls.
The blocks go round every op, mode and side in turn, so each row's blocks are spread over the
whole run. Each side's time is the median of its quietest block (the lowest block median): on a
shared machine other load slows stretches of seconds by up to 2x, and a median over all calls
reported that load (one row doubled from run to run); taken so, rows agree within 7% from run to
run. The median over all calls is in the JSON too. Writes <out>/host-overhead.md and
<out>/host-overhead.json (committed ones live in bench/results/) and prints the table.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from tritonprop import backend, ops
from tritonprop.bench import report
from tritonprop.kernels._common import allocations_only
from tritonprop.selfcheck import Sample

MODES = ("fwd", "fwd+bwd")
# BENCHMARKS.md: our host time per call may exceed torch's by at most this much.
TARGET_OVER_TORCH_US = 20.0
NOTE = ("host time per call on the CPU with every kernel launch skipped (tritonprop), beside torch's op run for real "
        "at sizes where its compute is negligible (torch)")
# Tiny stand-ins for a small model's layers (see the module docstring): a transformer's (batch 2,
# 3 tokens, width 8, 2 heads, 5 classes), a CNN's (4 channels of 5x5, 3x3 kernels) and an RNN's
# (2 steps, 4 inputs, 8 units).
BATCH, TOKENS, WIDTH, HEADS, CLASSES = 2, 3, 8, 2, 5
CHANNELS, SIDE = 4, 5
STEPS, RNN_INPUT, RNN_HIDDEN = 2, 4, 8


def _linear(randn):
    x, weight, bias = randn(BATCH, TOKENS, WIDTH), randn(WIDTH, WIDTH), randn(WIDTH)
    return Sample(ops.linear, F.linear, [x, weight, bias], [0, 1, 2])


def _conv2d(randn):
    x, weight, bias = randn(1, CHANNELS, SIDE, SIDE), randn(CHANNELS, CHANNELS, 3, 3), randn(CHANNELS)
    return Sample(lambda *t: ops.conv2d(*t, padding=1), lambda *t: F.conv2d(*t, padding=1), [x, weight, bias],
                  [0, 1, 2])


def _batch_norm(randn):
    x, weight, bias = randn(BATCH, CHANNELS, SIDE, SIDE), randn(CHANNELS), randn(CHANNELS)
    running_mean, running_var = torch.zeros(CHANNELS), torch.ones(CHANNELS)
    return Sample(lambda *t: ops.batch_norm(*t, training=True), lambda *t: F.batch_norm(*t, training=True),
                  [x, running_mean, running_var, weight, bias], [0, 3, 4])


def _layer_norm(randn):
    x, weight, bias = randn(BATCH, TOKENS, WIDTH), randn(WIDTH), randn(WIDTH)
    return Sample(lambda x, w, b: ops.layer_norm(x, (WIDTH,), w, b), lambda x, w, b: F.layer_norm(x, (WIDTH,), w, b),
                  [x, weight, bias], [0, 1, 2])


def _relu(randn):
    return Sample(ops.relu, F.relu, [randn(BATCH, TOKENS, WIDTH)], [0])


def _gelu(randn):
    return Sample(ops.gelu, F.gelu, [randn(BATCH, TOKENS, WIDTH)], [0])


def _dropout(randn):
    return Sample(lambda x: ops.dropout(x, 0.1), lambda x: F.dropout(x, 0.1), [randn(BATCH, TOKENS, WIDTH)], [0])


def _targets():
    return torch.arange(BATCH * TOKENS) % CLASSES


def _cross_entropy(randn):
    return Sample(ops.cross_entropy, F.cross_entropy, [randn(BATCH * TOKENS, CLASSES), _targets()], [0])


def _log_softmax(randn):
    return Sample(lambda x: ops.log_softmax(x, dim=-1), lambda x: F.log_softmax(x, dim=-1),
                  [randn(BATCH * TOKENS, CLASSES)], [0])


def _nll_loss(randn):
    return Sample(ops.nll_loss, F.nll_loss, [randn(BATCH * TOKENS, CLASSES), _targets()], [0])


def _attention(randn):
    q, k, v = (randn(BATCH, HEADS, TOKENS, WIDTH // HEADS) for _ in range(3))
    return Sample(lambda *t: ops.scaled_dot_product_attention(*t, is_causal=True),
                  lambda *t: F.scaled_dot_product_attention(*t, is_causal=True), [q, k, v], [0, 1, 2])


def _rnn_cell(randn):
    tensors = [randn(BATCH, RNN_INPUT), randn(BATCH, RNN_HIDDEN), randn(RNN_HIDDEN, RNN_INPUT),
               randn(RNN_HIDDEN, RNN_HIDDEN), randn(RNN_HIDDEN), randn(RNN_HIDDEN)]
    return Sample(ops.rnn_cell, torch.rnn_tanh_cell, tensors, list(range(6)))


def _rnn(randn):
    # torch's functional RNN is torch._VF.rnn_tanh, which torch.nn.RNN.forward calls (arguments:
    # has_biases, num_layers, dropout, train, bidirectional, batch_first).
    tensors = [randn(STEPS, BATCH, RNN_INPUT), randn(1, BATCH, RNN_HIDDEN), randn(RNN_HIDDEN, RNN_INPUT),
               randn(RNN_HIDDEN, RNN_HIDDEN), randn(RNN_HIDDEN), randn(RNN_HIDDEN)]
    return Sample(lambda x, h0, *weights: ops.rnn(x, h0, list(weights))[0],
                  lambda x, h0, *weights: torch._VF.rnn_tanh(x, h0, list(weights), True, 1, 0.0, True, False,
                                                             False)[0],
                  tensors, list(range(6)))


def _gated_cell(gates, ours, theirs):
    def sample(randn):
        state = [randn(BATCH, RNN_HIDDEN)] * (2 if gates == 4 else 1)
        tensors = [randn(BATCH, RNN_INPUT), *state, randn(gates * RNN_HIDDEN, RNN_INPUT),
                   randn(gates * RNN_HIDDEN, RNN_HIDDEN), randn(gates * RNN_HIDDEN), randn(gates * RNN_HIDDEN)]

        def call(cell):
            # The LSTM's state is the pair (h, c).
            def run(x, *rest):
                hx = tuple(rest[:2]) if gates == 4 else rest[0]
                out = cell(x, hx, *rest[len(state):])
                return out[0] if gates == 4 else out
            return run

        return Sample(call(ours), call(theirs), tensors, list(range(len(tensors))))
    return sample


def _gated_sequence(gates, ours, theirs):
    # torch's functional LSTM and GRU are torch._VF.lstm / gru, which torch.nn.LSTM / GRU's forward
    # call (arguments: has_biases, num_layers, dropout, train, bidirectional, batch_first).
    def sample(randn):
        state = [randn(1, BATCH, RNN_HIDDEN)] * (2 if gates == 4 else 1)
        tensors = [randn(STEPS, BATCH, RNN_INPUT), *state, randn(gates * RNN_HIDDEN, RNN_INPUT),
                   randn(gates * RNN_HIDDEN, RNN_HIDDEN), randn(gates * RNN_HIDDEN), randn(gates * RNN_HIDDEN)]
        count = len(state)

        def run_ours(x, *rest):
            hx = tuple(rest[:count]) if gates == 4 else rest[0]
            return ours(x, hx, list(rest[count:]))[0]

        def run_theirs(x, *rest):
            hx = list(rest[:count]) if gates == 4 else rest[0]
            return theirs(x, hx, list(rest[count:]), True, 1, 0.0, True, False, False)[0]

        return Sample(run_ours, run_theirs, tensors, list(range(len(tensors))))
    return sample


# Every op of the registry (tests/test_host_overhead.py checks) -> its sample, built from a draw of
# standard normals of a given shape. Every op is differentiable, so each is timed in both modes.
SAMPLES: dict[str, Callable[[Callable[..., torch.Tensor]], Sample]] = {
    "conv2d": _conv2d,
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "linear": _linear,
    "relu": _relu,
    "gelu": _gelu,
    "dropout": _dropout,
    "cross_entropy": _cross_entropy,
    "log_softmax": _log_softmax,
    "nll_loss": _nll_loss,
    "scaled_dot_product_attention": _attention,
    "rnn_cell": _rnn_cell,
    "rnn": _rnn,
    "lstm_cell": _gated_cell(4, ops.lstm_cell, torch.lstm_cell),
    "gru_cell": _gated_cell(3, ops.gru_cell, torch.gru_cell),
    "lstm": _gated_sequence(4, ops.lstm, torch._VF.lstm),
    "gru": _gated_sequence(3, ops.gru, torch._VF.gru),
}


def build_calls(op: str, mode: str) -> dict[str, Callable[[], object]]:
    """{"tritonprop": call, "torch": call}: zero-argument calls of op `op` in `mode`, each side on its
    own fresh tensors (batch_norm writes its running statistics)."""
    calls = {}
    for impl in ("tritonprop", "torch"):
        generator = torch.Generator().manual_seed(0)
        sample = SAMPLES[op](lambda *shape: torch.randn(shape, generator=generator))
        fn = sample.ours if impl == "tritonprop" else sample.theirs
        leaves = [t.requires_grad_(k in sample.grad_of) for k, t in enumerate(sample.tensors)]
        if mode == "fwd":
            calls[impl] = lambda fn=fn, leaves=leaves: fn(*leaves)
            continue
        wrt = [leaves[k] for k in sample.grad_of]
        with _context(impl):
            upstream = torch.ones_like(fn(*leaves))
        calls[impl] = lambda fn=fn, leaves=leaves, wrt=wrt, upstream=upstream: torch.autograd.grad(
            fn(*leaves), wrt, upstream)
    return calls


def _context(impl: str):
    """What a call of `impl` runs inside: ours with every launch skipped, torch's as it is."""
    return allocations_only() if impl == "tritonprop" else contextlib.nullcontext()


def stubbed_launches(op: str, mode: str, calls: dict) -> int:
    """Run ours once with launches skipped, check that its result has torch's shapes, and return
    how many launches it skipped."""
    with allocations_only() as skipped:
        ours = calls["tritonprop"]()
    theirs = calls["torch"]()
    shapes = [[tuple(t.shape) for t in (result if isinstance(result, tuple) else (result,))]
              for result in (ours, theirs)]
    if shapes[0] != shapes[1]:
        raise RuntimeError(f"{op} {mode}: the stubbed call gave shapes {shapes[0]}, torch's {shapes[1]}")
    return len(skipped)


def time_calls(calls_by_row: dict[tuple, dict[str, Callable[[], object]]], *, repeats: int, warmup: int,
               blocks: int = 60) -> dict[tuple, dict[str, list[list[int]]]]:
    """Nanoseconds of each of `repeats` calls per row and side, after `warmup` calls of each, as
    `blocks` blocks of calls. The blocks go round the rows and, within a row, the sides, so that
    each row's blocks are spread over the whole run rather than bunched into a moment of load."""
    for calls in calls_by_row.values():
        for impl, call in calls.items():
            with _context(impl):
                for _ in range(warmup):
                    call()
    times = {row: {impl: [] for impl in calls} for row, calls in calls_by_row.items()}
    blocks = min(blocks, repeats)
    for block in range(blocks):
        size = repeats // blocks + (block < repeats % blocks)  # the blocks share out `repeats`
        for row, calls in calls_by_row.items():
            for impl, call in calls.items():
                block_times = []
                with _context(impl):
                    for _ in range(size):
                        start = time.perf_counter_ns()
                        call()
                        block_times.append(time.perf_counter_ns() - start)
                times[row][impl].append(block_times)
    return times


def measure(rows: list[tuple[str, str]], *, repeats: int = 3000, warmup: int = 100) -> list[dict]:
    """One result per (op, mode) of `rows`: ours (launches skipped) against torch's, in
    microseconds per call (see the module docstring)."""
    calls_by_row = {row: build_calls(*row) for row in rows}
    launches = {row: stubbed_launches(*row, calls) for row, calls in calls_by_row.items()}
    threads = torch.get_num_threads()
    # One intra-op thread: dispatch is single-threaded anyway, and torch's thread pool, meeting
    # other load on the cores, otherwise made some medians of torch's tiny ops 12 ms.
    torch.set_num_threads(1)
    try:
        times = time_calls(calls_by_row, repeats=repeats, warmup=warmup)
    finally:
        torch.set_num_threads(threads)
    results = []
    for (op, mode), by_impl in times.items():
        ours_us, torch_us = (min(map(statistics.median, by_impl[impl])) / 1e3 for impl in ("tritonprop", "torch"))
        ours_all_us, torch_all_us = (statistics.median([t for block in by_impl[impl] for t in block]) / 1e3
                                     for impl in ("tritonprop", "torch"))
        results.append(dict(op=op, mode=mode, launches=launches[op, mode], tritonprop_us=ours_us, torch_us=torch_us,
                            over_torch_us=ours_us - torch_us,
                            meets_target=ours_us - torch_us <= TARGET_OVER_TORCH_US,
                            tritonprop_median_all_us=ours_all_us, torch_median_all_us=torch_all_us,
                            calls=sum(map(len, by_impl["tritonprop"]))))
    return results


def markdown_table(rows: list[dict]) -> str:
    lines = ["| op | mode | launches | tritonprop µs | torch µs | over torch µs | ≤ torch + 20 µs |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['op']} | {row['mode']} | {row['launches']} | {row['tritonprop_us']:.1f} "
                     f"| {row['torch_us']:.1f} | {row['over_torch_us']:+.1f} "
                     f"| {'met' if row['meets_target'] else 'not met'} |")
    return "\n".join(lines)


def markdown(info: dict, table: str) -> str:
    return "\n".join([
        "# tritonprop host overhead per op call",
        "",
        f"{info['device']} · torch {info['torch']} · triton {info['triton']} · commit {info['commit'] or 'unknown'} "
        f"· {info['date']}{' · quick' if info['quick'] else ''}",
        "",
        f"µs per call, the median of each side's quietest block of calls: {NOTE}. The target (BENCHMARKS.md) "
        f"is tritonprop ≤ torch + {TARGET_OVER_TORCH_US:g} µs. `launches` counts the kernel launches skipped per "
        "call; on a GPU each adds Triton's own launch time. How and why: bench/host_overhead.py.",
        "",
        table,
        "",
    ])


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tritonprop bench --host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench-out"),
                        help="output folder (default: $OUT if set, else ./bench-out)")
    parser.add_argument("--ops", default=",".join(SAMPLES),
                        help=f"comma-separated ops of the registry (default: every op, {', '.join(SAMPLES)})")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: quicker, noisier")
    args = parser.parse_args(argv)
    args.ops = [name.strip() for name in args.ops.split(",") if name.strip()]
    unknown = [name for name in args.ops if name not in SAMPLES]
    if unknown or not args.ops:
        parser.error(f"--ops: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SAMPLES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if backend.use_reference() or not backend.interpreting():
        # Only the kernel path has launches to skip, and CPU tensors reach it only when interpreted.
        print(f"tritonprop bench --host: needs the kernel path on CPU tensors: unset {backend.BACKEND_ENV} and set "
              "TRITON_INTERPRET=1 (the default on a machine without CUDA)", file=sys.stderr)
        return 2
    repeats, warmup = (300, 30) if args.quick else (3000, 100)
    rows = measure([(op, mode) for op in args.ops for mode in MODES], repeats=repeats, warmup=warmup)
    info = {**report.header(torch.device("cpu"), args.quick), "note": NOTE,
            "method": f"time.perf_counter_ns per call; {repeats} calls per side after {warmup} warm-up calls, in "
                      "blocks that go round every row and side; the lowest block median"}
    table = markdown_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host-overhead.json").write_text(json.dumps({"header": info, "rows": rows}, indent=2) + "\n")
    (args.out / "host-overhead.md").write_text(markdown(info, table))
    print(table)
    print(f"\nwrote {args.out / 'host-overhead.md'} and {args.out / 'host-overhead.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
