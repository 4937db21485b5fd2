"""`tritonprop lesson NAME`: small experiments a learner runs to see, in numbers, what a doc explains.

`tritonprop lesson conv` ("GPUs hate loops", docs/conv2d.md) times one convolution layer, forward
and forward+backward, computed three ways that are the same function:

- `conv2d_loop` (ops/reference/conv2d.py): the formula as Python loops, one small product per
  output pixel and kernel tap, so Ho·Wo·R·S tiny tensor ops and as many autograd nodes;
- `conv2d_unfold` (the same file): im2col, then one large matrix product (autograd backward);
- `tritonprop.ops.conv2d`: the Triton kernels, an implicit GEMM that never builds the im2col matrix.

It checks that the three agree (output and the gradients of input, weight and bias), because a
learner should see that they compute the same thing, and prints a table of times. On a CPU the
Triton kernel runs under Triton's interpreter, whose times say nothing about a GPU; the lesson
says so. On CUDA every time is taken after `torch.cuda.synchronize()`, so it is the GPU's time.

Each lesson registers its parser in `add_parsers`; `tritonprop/cli.py` calls it once.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import NamedTuple

import torch

from tritonprop import backend, ops
from tritonprop.models.train import positive_int
from tritonprop.bench.timing import synchronize
from tritonprop.ops.reference.conv2d import conv2d_geometry, conv2d_loop, conv2d_unfold
from tritonprop.tolerances import TOLERANCES  # what "agree" means in the test suite too

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ConvSize(NamedTuple):
    """One layer: input (N, C, H, W), weight (K, C, R, R); stride 1, padding R // 2 (odd R keeps H × W)."""
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int = 3

    def __str__(self) -> str:
        return f"N={self.N} C={self.C} H×W={self.H}×{self.W} K={self.K} R×S={self.R}×{self.R}"


# Small enough for the loop conv and the interpreter to finish all three in well under a minute on
# a CPU. H·W grows from 64 to 576 pixels: the loop's Python work grows with it, unfold's hardly.
DEFAULT_SIZES = (ConvSize(1, 4, 8, 8, 8), ConvSize(2, 8, 16, 16, 16), ConvSize(2, 16, 24, 24, 16))

# name, function, what it is (the table's rows, in this order; the times are compared with "unfold")
METHODS = (
    ("loop", conv2d_loop, "conv2d_loop: Python loops; one small (N×C)·(C×K) product per output pixel and tap"),
    ("unfold", conv2d_unfold, "conv2d_unfold: im2col (F.unfold), then one large matrix product"),
    ("triton", ops.conv2d, "tritonprop.ops.conv2d: the Triton kernels (an implicit GEMM; direct kernels if C=1)"),
)
BASELINE = "unfold"


def conv_size(text: str) -> ConvSize:
    """--sizes: one layer as N,C,H,W,K[,R] (R: kernel height and width, default 3), all positive."""
    fields = [field.strip() for field in text.split(",")]
    try:
        values = [int(field) for field in fields]
    except ValueError:
        values = []
    if len(values) not in (5, 6) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W,K or N,C,H,W,K,R as positive integers "
                                         f"(e.g. 2,8,16,16,16,3), got {text!r}")
    return ConvSize(*values)


class Timing(NamedTuple):
    forward: float  # seconds, the fastest of the timed runs
    forward_backward: float
    outputs: list  # y, dx, dw, db of the warm-up run, for the agreement check


def _time_method(fn, size: ConvSize, inputs, upstream, repeats: int) -> Timing:
    """One warm-up run (compiles or parses the kernels, fills caches), then `repeats` timed runs.

    Each run is forward then backward; the forward time is read in the middle of the same run, so
    it is the forward as training runs it (with the autograd graph being recorded). The fastest run
    is kept: anything else running on the machine only ever adds time."""
    forward_times, total_times, outputs = [], [], None
    device = inputs[0].device
    for run in range(repeats + 1):
        x, w, b = (t.detach().clone().requires_grad_() for t in inputs)
        synchronize(device)
        start = time.perf_counter()
        y = fn(x, w, b, 1, size.R // 2)
        synchronize(device)
        forward_done = time.perf_counter()
        y.backward(upstream)
        synchronize(device)
        end = time.perf_counter()
        if run == 0:
            outputs = [y.detach(), x.grad, w.grad, b.grad]
        else:
            forward_times.append(forward_done - start)
            total_times.append(end - start)
    return Timing(min(forward_times), min(total_times), outputs)


def _disagreement(ours: list, expected: list, dtype: torch.dtype) -> tuple[bool, float]:
    """(within the dtype's tolerance everywhere?, the largest absolute difference) over y, dx, dw, db."""
    tolerance = TOLERANCES[dtype]
    ok = all(torch.allclose(a, e, **tolerance) for a, e in zip(ours, expected))
    worst = max(float((a - e).abs().max()) for a, e in zip(ours, expected))
    return ok, worst


def _seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-6:.3g} µs"


@contextlib.contextmanager
def _full_fp32_matmuls():
    """fp32 products in full fp32, as on the CPU: TF32 off for torch's matmuls and for the Triton kernel
    (which follows cudnn.allow_tf32 as torch's conv does), so that fp32 results agree within fp32 tolerance."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _introduction(device: torch.device, dtype: torch.dtype, repeats: int) -> str:
    lines = [
        "What is measured: one convolution layer (stride 1, padding R//2, with bias), computed three ways",
        "that are the same function. 'forward' is y = conv(x, w) + b; 'fwd+bwd' adds the backward, the",
        f"gradients of x, w and b. Each time is the fastest of {repeats} run(s) after one warm-up run;",
        "'×unfold' is that time divided by unfold's.",
        "",
    ]
    lines += [f"  {name:<7}{about}" for name, _, about in METHODS]
    lines.append("")
    if backend.interpreting():
        lines += [
            "NOTE: the Triton kernel runs under Triton's INTERPRETER here (TRITON_INTERPRET=1): Python and numpy",
            "execute the kernel's source, one program after another. That is not compiled code, so the 'triton'",
            "times below measure the interpreter and say nothing about the kernel's speed on a GPU.",
            "The loop and unfold times are real CPU times: the gap between them is the cost of Python-level loops.",
        ]
    else:
        lines += [f"Device {torch.cuda.get_device_name(device)}: compiled kernels. Every time is taken after",
                  "torch.cuda.synchronize(), so it includes the GPU's work, not only the kernel launches."]
        if dtype == torch.float32:
            lines.append("TF32 is off during the lesson (full fp32 products everywhere), so that the three can "
                         "agree within fp32 tolerance.")
    lines.append("")
    return "\n".join(lines)


def _ratio(value: float) -> str:
    return f"{value:.0f}×" if value >= 100 else f"{value:.3g}×"


HEADER = ("method", "forward", "fwd+bwd", "fwd ×unfold", "fwd+bwd ×unfold", "agrees with unfold")


def _table(groups: list) -> str:
    """One block per size: a line naming the size, then one row per method, in aligned columns."""
    rows = [row for _, group in groups for row in group]
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(row):
        cells = [cell.ljust(width) if i in (0, len(row) - 1) else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        return ("  " + "  ".join(cells)).rstrip()

    lines = [line(HEADER), "  " + "  ".join("-" * width for width in widths)]
    for size, group in groups:
        lines.append(str(size))
        lines += [line(row) for row in group]
    return "\n".join(lines)


def conv(args) -> int:
    """`tritonprop lesson conv`: prints what is measured, the table, and whether the three agree."""
    if backend.use_reference():
        print(f"tritonprop lesson conv: error: {backend.BACKEND_ENV}=reference routes tritonprop.ops.conv2d to "
              "conv2d_unfold, so there would be no Triton kernel to time; unset it", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("tritonprop lesson conv: error: argument --device: cuda was asked for but this machine has no "
              "CUDA device", file=sys.stderr)
        return 2
    if device.type == "cpu" and not backend.interpreting():
        print("tritonprop lesson conv: error: argument --device: the Triton kernels are compiled for CUDA in this "
              "process; run with TRITON_INTERPRET=1 to time them on the CPU (interpreted)", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype]
    print(_introduction(device, dtype, args.repeats))
    generator = torch.Generator().manual_seed(0)
    groups, everything_agrees = [], True
    with _full_fp32_matmuls():
        for size in args.sizes or DEFAULT_SIZES:
            x = torch.randn(size.N, size.C, size.H, size.W, generator=generator, dtype=dtype)
            # Scaled so that y has about the spread of x (fan-in C·R²), whatever the size.
            w = torch.randn(size.K, size.C, size.R, size.R, generator=generator, dtype=dtype)
            w = w / (size.C * size.R**2) ** 0.5
            b = torch.randn(size.K, generator=generator, dtype=dtype)
            inputs = [t.to(device) for t in (x, w, b)]
            # dy as a loss averaged over the N·Ho·Wo output positions gives it: dw and db, sums over those
            # positions, then stay about 1 in size at every size, and so does their rounding error.
            height, width = conv2d_geometry(x.shape, w.shape, 1, size.R // 2).output_size
            upstream = torch.randn(size.N, size.K, height, width, generator=generator, dtype=dtype)
            upstream = (upstream / (size.N * height * width) ** 0.5).to(device)
            timings = {name: _time_method(fn, size, inputs, upstream, args.repeats) for name, fn, _ in METHODS}
            base = timings[BASELINE]
            group = []
            groups.append((size, group))
            for name, timing in timings.items():
                if name == BASELINE:
                    agrees = "(the baseline)"
                else:
                    ok, worst = _disagreement(timing.outputs, base.outputs, dtype)
                    everything_agrees &= ok
                    agrees = f"{'yes' if ok else 'NO'} (max |diff| {worst:.1e})"
                group.append((name, _seconds(timing.forward), _seconds(timing.forward_backward),
                              _ratio(timing.forward / base.forward),
                              _ratio(timing.forward_backward / base.forward_backward), agrees))
    print(_table(groups))
    print()
    tolerance = ", ".join(f"{key}={value:g}" for key, value in TOLERANCES[dtype].items())
    if everything_agrees:
        print(f"Agreement: at every size the three give the same output and the same gradients of x, w and b,\n"
              f"within {args.dtype} tolerance ({tolerance}): one function, computed three ways.")
        return 0
    print(f"Agreement FAILED: some method differs from unfold beyond {args.dtype} tolerance ({tolerance}):\n"
          "see the 'NO' rows. Sums taken in another order differ by rounding, which grows with the size;\n"
          "rerun with --dtype float64 to tell rounding from a real difference.")
    return 1


def _conv_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = " ".join(",".join(map(str, size)) for size in DEFAULT_SIZES)
    parser.add_argument("--sizes", type=conv_size, nargs="+", default=None, metavar="N,C,H,W,K[,R]",
                        help="the layers to time: batch, input channels, height, width, output channels and, "
                             f"optionally, the kernel size R (R×R, default 3); default: {defaults}")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed runs per method, after one warm-up run (default: 3)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when present")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="default: float32")


# name -> (what it shows, its options, what runs it)
LESSONS = {
    "conv": ("GPUs hate loops: the loop conv, the unfold (im2col) conv and the Triton kernel, timed forward and "
             "forward+backward, and checked to agree (docs/conv2d.md)", _conv_arguments, conv),
}


def add_parsers(lessons) -> None:
    """Adds one parser per lesson to `lessons`, the subparsers of `tritonprop lesson`."""
    for name, (about, arguments, run) in LESSONS.items():
        parser = lessons.add_parser(name, help=about, description=about)
        arguments(parser)
        parser.set_defaults(run=run)
