"""`tritonprop.record()`: which of tritonprop's ops ran, and how many kernels each launched.

    with tritonprop.record() as ran:
        loss = model(x).sum()
        loss.backward()
    print(ran)                      # a table: op, calls, kernel launches
    ran.calls("conv2d")             # 3

Counted are the runs of the ``tritonprop::`` custom ops (forward and backward ops alike: conv2d,
conv2d_backward_input, ...), in eager mode and inside compiled graphs, and every kernel launch
they make (through kernels._common.launch, the one place kernels start). A layer that torch runs
itself (a layer `ops.convert` left alone, or torch's own fused fast path) shows up as missing.
Shape inference on fake tensors and the static report's captured launches are not runs, and are
not counted.

The active recordings are a module-level list rather than a context variable: on a GPU, autograd
runs the backward in its own device threads, which a context variable set here would not reach.
So a recording also counts what other threads run meanwhile.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass, field

# The recordings in progress (usually none or one). Checked on every op run and kernel launch, so
# that a run with no recording costs one list test.
ACTIVE: list = []
# The custom op running in this thread, to which its kernel launches are counted.
_CURRENT = threading.local()


@dataclass
class OpCount:
    """How often one op ran, and how many kernel launches those runs made."""
    calls: int = 0
    launches: int = 0


@dataclass
class Recording:
    """What ran inside one `record()` block: ``ops`` by custom-op name, ``kernels`` by kernel name."""
    ops: dict = field(default_factory=dict)
    kernels: dict = field(default_factory=dict)

    def calls(self, op: str) -> int:
        """How many times custom op ``op`` (e.g. 'conv2d', 'conv2d_backward_input') ran."""
        return self.ops[op].calls if op in self.ops else 0

    def launches(self, op: str | None = None) -> int:
        """The kernel launches made by op ``op``, or by every op when None."""
        if op is None:
            return sum(count.launches for count in self.ops.values())
        return self.ops[op].launches if op in self.ops else 0

    def table(self) -> str:
        """The ops that ran, most calls first, as a plain-text table."""
        if not self.ops:
            return "no tritonprop op ran"
        rows = sorted(self.ops.items(), key=lambda item: (-item[1].calls, item[0]))
        width = max(len("tritonprop op"), *(len(name) for name, _ in rows))
        lines = [f"{'tritonprop op':<{width}}  {'calls':>7}  {'launches':>8}"]
        lines += [f"{name:<{width}}  {count.calls:>7}  {count.launches:>8}" for name, count in rows]
        lines.append(f"{'total':<{width}}  {sum(c.calls for _, c in rows):>7}  {self.launches():>8}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


@contextlib.contextmanager
def record(*, show: bool = False, file=None):
    """Count the tritonprop ops that run inside the block and their kernel launches; yields the
    `Recording`, which fills in as they run. ``show=True`` prints its table at the end (to
    ``file``, standard output by default)."""
    recording = Recording()
    ACTIVE.append(recording)
    try:
        yield recording
    finally:
        ACTIVE.remove(recording)
        if show:
            print(recording.table(), file=file if file is not None else sys.stdout)


def counted(name: str, wrapper):
    """``wrapper`` (an op's implementation), counting its runs as op ``name`` while a recording is active."""

    def run(*args, **kwargs):
        if not ACTIVE:
            return wrapper(*args, **kwargs)
        for recording in ACTIVE:
            recording.ops.setdefault(name, OpCount()).calls += 1
        outer = getattr(_CURRENT, "op", None)
        _CURRENT.op = name
        try:
            return wrapper(*args, **kwargs)
        finally:
            _CURRENT.op = outer

    run.__name__, run.__qualname__, run.__doc__ = wrapper.__name__, wrapper.__qualname__, wrapper.__doc__
    return run


def kernel_name(kernel) -> str:
    """The Python name of a kernel: the function inside a JITFunction, or inside an Autotuner around one."""
    while hasattr(kernel, "fn"):
        kernel = kernel.fn
    return getattr(kernel, "__name__", repr(kernel))


def count_launch(kernel) -> None:
    """Note one launch of ``kernel`` in every active recording (called only while one is)."""
    name = kernel_name(kernel)
    op = getattr(_CURRENT, "op", None)
    for recording in ACTIVE:
        recording.kernels[name] = recording.kernels.get(name, 0) + 1
        if op is not None:
            recording.ops.setdefault(op, OpCount()).launches += 1
