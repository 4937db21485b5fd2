"""The static sm_90 report: what the compiler says about every kernel launch of the benchmarks.

    python -m tritonprop.bench.static_sm90 --out bench/results     # `tritonprop bench --static` forwards here
    python -m tritonprop.bench.static_sm90 --ops conv2d,linear --jobs 16

No GPU is needed. For every benchmark case of the op registry's bench groups (bench/cases.py), at
its CUDA shape (BENCHMARKS.md), and for each mode (fwd, fwd+bwd):
1. the tritonprop callable runs on meta tensors inside `kernels._common.captured_launches`, which
   records every kernel launch (kernel, grid, arguments) instead of running it. Meta tensors carry
   no data, and each op's fake implementation is its own launch function, so exactly the launches
   of a real call are recorded, with the tiles, warps and stages the launch functions choose.
2. each distinct launch is compiled for sm_90 with Triton's own argument specialization (which
   integers are 1 or divisible by 16, which pointers are 16-byte aligned). A meta tensor's
   `data_ptr()` is its byte offset from an aligned base, as a fresh CUDA allocation's is.
3. ptxas's `-v` output gives registers and spills; the PTX shows whether `tl.dot` became wgmma
   or mma.sync and whether loads go through cp.async or TMA (cp.async.bulk.tensor).

From those: CTAs per SM (registers, shared memory, threads, H100/H200 limits) and the grid against
132 SMs, as waves. Writes <out>/static-sm90.md and <out>/static-sm90.json. The whole models
(bench group `models`) are left out: their launches are those of the ops, at other shapes.

The kernels must be decorated with TRITON_INTERPRET=0. Importing tritonprop on a machine without
CUDA turns the interpreter on, so `main` re-runs itself in a fresh process with it off when it
finds it on. Compiling on the GPU machine with --jobs warms Triton's cache for the benchmark
launches: each compile is the one the launch itself makes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from tritonprop import backend
from tritonprop.bench import cases as bench_cases
from tritonprop.bench.case import DTYPE_NAMES, MODES
from tritonprop.kernels._common import captured_launches, ctas_per_sm

HOPPER = GPUTarget("cuda", 90, 32)

SM_COUNT = 132

# A launch that touches less than this many bytes is done in a few microseconds whatever its grid
# (launch latency dominates), so the grid-fill check leaves it alone: the fixed-order finishing
# sums over a handful of partials, the per-channel statistics merge, a loss's final reduction.
SMALL_LAUNCH_BYTES = 4 << 20

# Kernels whose programs meet at a grid-wide barrier: one launch loops over all T steps, so the
# grid must be co-resident (at most CTAs/SM x SM_COUNT) and is judged against PERSISTENT_MIN_PROGRAMS
# rather than against half the SMs. Each with what the report prints.
PERSISTENT = {
    "recurrence_forward_persistent_kernel": "recurrence, all T steps in one launch (grid barrier)",
    "recurrence_backward_persistent_kernel": "BPTT, all T steps in one launch (grid barrier)",
}
PERSISTENT_MIN_PROGRAMS = 32


# ----------------------------------------------------------------------------------------------
# 1. Capture
# ----------------------------------------------------------------------------------------------


def op_groups() -> list[str]:
    """The bench groups of the op registry, in its order (the models group times no single op)."""
    return [group for group in bench_cases.CASES if group not in bench_cases.NON_OP_GROUPS]


@dataclass
class CaseLaunches:
    case: str
    dtype: str
    mode: str
    launches: list = field(default_factory=list)  # kernels._common.Launch


def capture(groups, names=None) -> list[CaseLaunches]:
    """Every launch of one call of each case and mode of `groups`, at the CUDA shapes; only the
    cases whose name contains one of `names`, when given."""
    captured = []
    for group in groups:
        for case in bench_cases.CASES[group](torch.device("cuda")):
            if names and not any(name in case.name for name in names):
                continue
            callables = case.build(torch.device("meta"))["tritonprop"]
            for mode in MODES:
                with captured_launches(SM_COUNT) as launches:
                    callables[mode]()
                captured.append(CaseLaunches(case.name, DTYPE_NAMES[case.dtype], mode, launches))
    return captured


# ----------------------------------------------------------------------------------------------
# 2. Compile, with a launch's own specialization
# ----------------------------------------------------------------------------------------------


def _jit_function(kernel):
    while not isinstance(kernel, triton.JITFunction):
        kernel = kernel.fn  # unwrap autotuners
    return kernel


def _configs(kernel) -> list:
    """An autotuned kernel compiles every config of its list; a plain one, its launch as given."""
    return list(getattr(kernel, "configs", None) or [None])


@dataclass
class Compile:
    """One distinct compile: what `JITFunction.run` would hand to `triton.compile`."""
    fn: object
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict

    @property
    def key(self) -> str:
        return repr((self.fn.__name__, self.signature, self.constexprs, self.attrs, sorted(self.options.items())))


def specialize(launch, config) -> tuple[Compile, tuple]:
    """The compile of one launch (with an autotune config's parameters, if any) and its grid."""
    fn = _jit_function(launch.kernel)
    kwargs = dict(launch.kwargs)
    if config is not None:
        kwargs.update(config.all_kwargs())
    # As JITFunction.run does before it binds the arguments.
    kwargs["debug"] = kwargs.get("debug", fn.debug) or triton.knobs.runtime.debug
    kwargs["instrumentation_mode"] = triton.knobs.compilation.instrumentation_mode
    backend = make_backend(HOPPER)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    grid = launch.grid(bound_args) if callable(launch.grid) else launch.grid
    grid = tuple(grid) + (1,) * (3 - len(grid))
    return Compile(fn, signature, constexprs, attrs, dict(options.__dict__)), grid


def _ptxas_usage(ptx: str, options: dict) -> dict:
    """Registers and spill bytes, from ptxas -v on the PTX (the flags Triton's own compile passes)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    fmad = [] if options.get("enable_fp_fusion", True) else ["--fmad=false"]
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        result = subprocess.run([get_ptxas(HOPPER.arch).path, *fmad, "-v", f"--gpu-name={sm_arch_from_capability(90)}",
                                 str(source), "-o", str(Path(folder) / "kernel.cubin")],
                                capture_output=True, text=True, check=True)
    log = result.stdout + result.stderr
    registers = re.search(r"Used (\d+) registers", log)
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    return dict(registers=int(registers.group(1)) if registers else 0,
                spill_stores=int(stores.group(1)) if stores else 0,
                spill_loads=int(loads.group(1)) if loads else 0)


def compile_and_read(job: Compile) -> dict:
    """Compile for sm_90 and read what decides speed from ptxas, the PTX and the metadata."""
    compiled = triton.compile(ASTSource(job.fn, job.signature, job.constexprs, job.attrs), target=HOPPER,
                              options=job.options)
    ptx = compiled.asm["ptx"]
    ttir = compiled.asm["ttir"]
    if "wgmma.mma_async" in ptx:
        dot = "wgmma"
    elif "mma.sync" in ptx:
        dot = "mma.sync"
    elif "tt.dot" in ttir:
        dot = "fma"  # a tl.dot that became scalar FMAs (fp64, or tiles too small)
    else:
        dot = "-"
    if "cp.async.bulk.tensor" in ptx:
        loads = "TMA"
    elif re.search(r"cp\.async\.c[ag]", ptx):
        loads = "cp.async"
    else:
        loads = "ld"
    if _BUILD_LAUNCHERS:
        # On the GPU machine, also build the kernel's C launcher (a gcc run that Triton caches),
        # so that warming the cache in parallel leaves less to build at the first real launch.
        # Best effort: a forked worker may find CUDA unusable, and the launch builds it anyway.
        try:
            triton.runtime.driver.active.launcher_cls(compiled.src, compiled.metadata)
        except Exception:  # noqa: BLE001
            pass
    usage = _ptxas_usage(ptx, job.options)
    return dict(usage, shared=compiled.metadata.shared, dot=dot, loads=loads, matmul="tt.dot" in ttir)


# ----------------------------------------------------------------------------------------------
# 3. Rows and checks
# ----------------------------------------------------------------------------------------------

TILE_NAMES = re.compile(r"^(BLOCK_\w+|GROUP_\w+|NUM_STAGES|SPLIT\w*)$")


def _config_text(job: Compile) -> str:
    tiles = [f"{name.split('_', 1)[-1] if name.startswith('BLOCK_') else name}={value}"
             for (index,), value in job.constexprs.items()
             for name in [job.fn.arg_names[index]] if TILE_NAMES.match(name)]
    return " ".join(tiles + [f"w{job.options['num_warps']}", f"s{job.options['num_stages']}"])


def _data_dtype(job: Compile) -> str:
    """The kernel's data dtype: 16-bit when any pointer is (a bf16 wgrad writes fp32 partials,
    yet its dot runs on bf16 operands), else the dtype most of its pointers have."""
    pointers = [kind[1:] for kind in job.signature.values() if isinstance(kind, str) and kind.startswith("*")]
    for half in ("bf16", "fp16"):
        if half in pointers:
            return half
    return max(set(pointers), key=pointers.count) if pointers else "-"


def _bytes_touched(launch) -> int:
    return sum(t.numel() * t.element_size() for t in launch.args if isinstance(t, torch.Tensor))


def specialize_all(captured: list[CaseLaunches]) -> list[tuple]:
    """(case entry, launch, autotune config or None, compile, grid) for every launch and config."""
    return [(entry, launch, config, *specialize(launch, config))
            for entry in captured for launch in entry.launches for config in _configs(launch.kernel)]


def build_rows(specialized: list[tuple], results: dict) -> list[dict]:
    rows = []
    for entry, launch, config, job, grid in specialized:
        read = results[job.key]
        ctas = ctas_per_sm(read["registers"], read["shared"], job.options["num_warps"])
        programs = grid[0] * grid[1] * grid[2]
        rows.append(dict(
            case=entry.case, case_dtype=entry.dtype, mode=entry.mode, kernel=job.fn.__name__,
            dtype=_data_dtype(job), config=_config_text(job), num_warps=job.options["num_warps"],
            num_stages=job.options["num_stages"], **read, ctas_per_sm=ctas, grid=list(grid),
            programs=programs, waves=round(programs / max(ctas * SM_COUNT, 1), 2),
            bytes_touched=_bytes_touched(launch), autotune_config=config is not None,
            persistent=job.fn.__name__ in PERSISTENT))
    return rows


def findings(rows: list[dict]) -> list[str]:
    """What the CI subset test fails on (tests/test_static_sm90.py), one line per distinct problem:
    - a 16-bit kernel that spills;
    - a 16-bit matmul-shaped kernel (one with a tl.dot) whose dot is not wgmma;
    - a launch big enough to matter (SMALL_LAUNCH_BYTES) that fills fewer than half the SMs;
    - a persistent kernel (PERSISTENT) whose grid is under PERSISTENT_MIN_PROGRAMS, or more than
      can be resident at once (its grid barrier would never open).
    Spills at any dtype are listed by `spills`."""
    problems = []
    for row in rows:
        where = f"{row['kernel']} [{row['config']}] in {row['case']} {row['mode']}"
        if row["dtype"] in ("bf16", "fp16"):
            if row["spill_stores"] or row["spill_loads"]:
                problems.append(f"{where}: spills {row['spill_stores']} B stored / {row['spill_loads']} B loaded")
            if row["matmul"] and row["dot"] != "wgmma":
                problems.append(f"{where}: tl.dot compiled to {row['dot']}, not wgmma")
        if row["persistent"]:
            if row["programs"] < PERSISTENT_MIN_PROGRAMS:
                problems.append(f"{where}: persistent grid of {row['programs']} CTAs, under {PERSISTENT_MIN_PROGRAMS}")
            if row["programs"] > row["ctas_per_sm"] * SM_COUNT:
                problems.append(f"{where}: persistent grid of {row['programs']} CTAs cannot be co-resident "
                                f"({row['ctas_per_sm']} per SM)")
        elif row["programs"] < SM_COUNT // 2 and row["bytes_touched"] >= SMALL_LAUNCH_BYTES:
            problems.append(f"{where}: {row['programs']} CTAs on {SM_COUNT} SMs")
    return sorted(set(problems))


def spills(rows: list[dict]) -> list[str]:
    """Every spilling kernel, at any dtype: the report holds them all to zero."""
    return sorted({f"{row['kernel']} [{row['config']}] {row['dtype']} in {row['case']}: "
                   f"{row['spill_stores']} B / {row['spill_loads']} B" for row in rows
                   if row["spill_stores"] or row["spill_loads"]})


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

COLUMNS = ("kernel", "dtype", "config", "regs", "spills (B)", "smem (KB)", "dot", "loads", "CTAs/SM", "grid",
           "waves")


def _cells(row: dict) -> list[str]:
    grid = "x".join(str(g) for g in row["grid"] if g != 1) or "1"
    spill = f"{row['spill_stores']}/{row['spill_loads']}" if row["spill_stores"] or row["spill_loads"] else "0"
    note = ", persistent" if row["persistent"] else ""
    return [row["kernel"], row["dtype"], row["config"], str(row["registers"]), spill, f"{row['shared'] / 1024:.1f}",
            row["dot"], row["loads"], str(row["ctas_per_sm"]), f"{grid} ({row['programs']}){note}", f"{row['waves']:g}"]


def markdown(rows: list[dict], header: dict) -> str:
    lines = [
        "# Static sm_90 report: every kernel launch of the benchmarks, as the compiler sees it",
        "",
        f"Generated by `tritonprop bench --static` on {header['date']} (commit {header['commit']}, "
        f"triton {header['triton']}, torch {header['torch']}). **No kernel ran**: these are compile-time facts "
        f"for an H100/H200 (sm_90, {SM_COUNT} SMs), not measured speed.",
        "",
        "- **regs**: registers per thread (ptxas); **spills**: bytes of spill stores / loads per thread.",
        "- **smem**: shared memory per CTA. **dot**: what `tl.dot` compiled to (wgmma, mma.sync, fma; - when the "
        "kernel has none). **loads**: TMA (cp.async.bulk.tensor), cp.async (pipelined), or plain ld.",
        "- **CTAs/SM**: how many fit at once (registers, shared memory, warps). **grid**: CTAs launched. "
        f"**waves**: CTAs / (CTAs/SM x {SM_COUNT}).",
        "",
        f"Checks (tests/test_static_sm90.py): {len(header['findings'])} finding(s); spills at any dtype: "
        f"{len(header['spills'])}.",
        "",
    ]
    for kernel, what in PERSISTENT.items():
        lines.append(f"- persistent: `{kernel}`: {what}; its grid must be co-resident and at least "
                     f"{PERSISTENT_MIN_PROGRAMS} CTAs")
    for problem in header["findings"]:
        lines.append(f"- finding: {problem}")
    for spill in header["spills"]:
        lines.append(f"- spill: {spill}")
    current = None
    for row in rows:
        if (row["case"], row["mode"]) != current:
            current = (row["case"], row["mode"])
            lines += ["", f"## {row['case']} — {row['mode']}", "", "| " + " | ".join(COLUMNS) + " |",
                      "|" + "---|" * len(COLUMNS)]
        lines.append("| " + " | ".join(_cells(row)) + " |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# The distinct compiles, set before the worker processes fork (they index into it), and whether
# to build their launchers too (decided in the parent: a CUDA device is present).
_JOBS: list = []
_BUILD_LAUNCHERS = False


def _compile_job(index: int):
    return _JOBS[index].key, compile_and_read(_JOBS[index])


def report(groups, jobs: int = 1, names=None) -> tuple[list[dict], dict]:
    """Capture, compile (in `jobs` processes) and build the rows and the header."""
    specialized = specialize_all(capture(groups, names))
    distinct = {}
    for *_, job, _grid in specialized:
        distinct.setdefault(job.key, job)
    _JOBS[:] = distinct.values()
    global _BUILD_LAUNCHERS
    _BUILD_LAUNCHERS = torch.cuda.is_available()
    if jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            results = dict(pool.map(_compile_job, range(len(_JOBS))))
    else:
        results = dict(map(_compile_job, range(len(_JOBS))))
    rows = build_rows(specialized, results)
    header = dict(date=datetime.date.today().isoformat(), commit=_commit(), triton=triton.__version__,
                  torch=torch.__version__, target="sm_90", sm_count=SM_COUNT, groups=list(groups),
                  distinct_compiles=len(_JOBS), findings=findings(rows), spills=spills(rows))
    return rows, header


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tritonprop bench --static", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench-out"),
                        help="output folder (default: $OUT if set, else ./bench-out)")
    parser.add_argument("--ops", default=",".join(op_groups()),
                        help=f"comma-separated bench groups (default: all, {', '.join(op_groups())})")
    parser.add_argument("--cases", default="",
                        help="comma-separated parts of case names: only the cases whose name contains one (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes (default: all cores)")
    args = parser.parse_args(argv)
    args.cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    args.ops = [name.strip() for name in args.ops.split(",") if name.strip()]
    unknown = [name for name in args.ops if name not in op_groups()]
    if unknown:
        parser.error(f"--ops: unknown group {', '.join(unknown)}; choose from {', '.join(op_groups())}")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if backend.interpreting():
        # The kernels were decorated for the interpreter: compile them in a process where they are not.
        environment = dict(os.environ, TRITON_INTERPRET="0")
        return subprocess.run([sys.executable, "-m", "tritonprop.bench.static_sm90", *argv], env=environment).returncode
    rows, header = report(args.ops, args.jobs, args.cases)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "static-sm90.json").write_text(json.dumps(dict(header=header, rows=rows), indent=1) + "\n")
    (args.out / "static-sm90.md").write_text(markdown(rows, header))
    print(f"{header['distinct_compiles']} distinct kernel compiles for sm_90 over {len(rows)} launches; "
          f"{len(header['findings'])} finding(s), {len(header['spills'])} spilling kernel(s)")
    for line in header["findings"] + [f"spill: {s}" for s in header["spills"]]:
        print("  " + line)
    print(f"wrote {args.out / 'static-sm90.md'} and {args.out / 'static-sm90.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
