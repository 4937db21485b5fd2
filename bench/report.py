"""The benchmark report: every case and mode, timed for tritonprop, naive and torch, as markdown and JSON.

    python -m tritonprop.bench.report --out bench-out     # `tritonprop bench [options]` forwards here
    python -m tritonprop.bench.report --ops batch_norm --quick

Writes <out>/bench.json (a header with versions, device, commit and date, then one row per case,
mode and implementation) and <out>/bench.md (one row per case and mode), and prints the table.
Ratios are speedups against torch native measured in the same run: t_torch / t_ours. Off CUDA
the kernels are interpreted and the report says loudly that its times mean nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
import triton

import tritonprop
from tritonprop import registry
from tritonprop.bench import cases, timing


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tritonprop bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench-out"),
                        help="output folder (default: $OUT if set, else ./bench-out)")
    parser.add_argument("--ops", default=",".join(cases.CASES),
                        help="comma-separated case groups, or ops of the registry (each runs its group), "
                             f"to run (default: every group, {', '.join(cases.CASES)})")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: quicker, noisier")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.ops.split(",") if name.strip()]
    try:
        args.ops = groups_of(names)
    except ValueError as error:
        parser.error(f"--ops: {error}")
    return args


def groups_of(names: list[str]) -> list[str]:
    """The case groups that `names` ask for, once each and in order: a group stands for itself, an
    op of the registry (tritonprop/registry.py) for the group its entry names."""
    groups = []
    for name in names:
        if name in cases.CASES:
            group = name
        elif name in registry.OPS:
            group = registry.OPS[name].bench
            if group is None:
                raise ValueError(f"the op {name} has no benchmark cases (its registry entry says bench=None)")
        else:
            raise ValueError(f"unknown {name}; choose groups from {', '.join(cases.CASES)} "
                             f"or ops from {', '.join(registry.OPS)}")
        if group not in groups:
            groups.append(group)
    if not groups:
        raise ValueError(f"none given; choose from {', '.join(cases.CASES)}")
    return groups


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def header(device: torch.device, quick: bool) -> dict:
    on_cuda = device.type == "cuda"
    return {
        "tritonprop": tritonprop.__version__,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if on_cuda else f"cpu ({platform.processor() or platform.machine()})",
        "interpreted": not on_cuda,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "note": None if on_cuda else timing.CPU_NOTE,
    }


def measure_case(case: cases.Case, device: torch.device, quick: bool) -> list[dict]:
    """One row per mode and implementation; a failing implementation gives a row with its error."""
    callables = case.build(device)
    # The three every case has, then any further baselines the case measures (SDPA's backends).
    impls = [*cases.IMPLS, *(impl for impl in callables if impl not in cases.IMPLS)]
    rows = []
    for mode in cases.MODES:
        mode_rows = {impl: {**case.describe(), "mode": mode, "impl": impl} for impl in impls}
        for impl, row in mode_rows.items():
            try:
                row.update(timing.measure(callables[impl][mode], device, quick=quick))
            except Exception as error:  # one broken kernel must not cost the rest of a GPU run
                row["error"] = f"{type(error).__name__}: {error}"
                print(f"{case.name} {mode} {impl}: {row['error']}", file=sys.stderr)
            else:
                row[case.throughput_key] = case.throughput(mode, row["median_ms"])
                row["peak_mb"] = timing.peak_memory_mb(callables[impl][mode], device)
                print(f"{case.name} {mode} {impl}: {row['median_ms']:.4g} ms", file=sys.stderr)
        native = mode_rows["torch"]
        for row in mode_rows.values():
            if "error" not in row and "error" not in native:
                row["speedup_vs_torch"] = native["median_ms"] / row["median_ms"]
        rows += mode_rows.values()
    return rows


def _median(row: dict) -> float | None:
    return None if "error" in row else row["median_ms"]


def _ms(row: dict) -> str:
    return "error" if _median(row) is None else f"{_median(row):.4g}"


def _ratio(slower: dict, ours: dict) -> str:
    if _median(slower) is None or _median(ours) is None:
        return "—"
    return f"{_median(slower) / _median(ours):.2f}×"


def _peak(row: dict) -> str:
    # Memory beyond the inputs, measured on CUDA only (timing.peak_memory_mb).
    return "n/a" if row.get("peak_mb") is None else f"{row['peak_mb']:.0f}"


def _target(case: cases.Case, mode: str, by_impl: dict, on_cuda: bool) -> str:
    goals = [("torch", case.target[mode])] if mode in case.target else []
    goals += [(impl, targets[mode]) for impl, targets in case.other_targets.items() if mode in targets]
    if not goals:
        return ""
    if not on_cuda:
        return "n/a (CPU)"
    verdicts = []
    for impl, goal in goals:
        baseline = by_impl.get(impl, {})
        reached = None if _median(baseline) is None or _median(by_impl["tritonprop"]) is None else (
            _median(baseline) / _median(by_impl["tritonprop"]))
        verdict = "not measured" if reached is None else ("met" if reached >= goal else "not met")
        verdicts.append(f"≥ {goal:g}× {impl}: {verdict}")
    return "; ".join(verdicts)


def _others(by_impl: dict) -> str:
    """Further baselines beside torch: their time and ours against them."""
    ours = by_impl["tritonprop"]
    return "; ".join(f"{impl} {_ms(row)} ms ({_ratio(row, ours)})"
                     for impl, row in by_impl.items() if impl not in cases.IMPLS)


def markdown_table(results: list[tuple[cases.Case, list[dict]]], on_cuda: bool) -> str:
    lines = [
        "| op | case | dtype | layout | mode | tritonprop ms | naive ms | torch ms | ours throughput "
        "| ours vs torch | ours vs naive | peak MB ours / torch | other baselines (ours vs them) | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, rows in results:
        for mode in cases.MODES:
            by_impl = {row["impl"]: row for row in rows if row["mode"] == mode}
            ours, naive, native = (by_impl[impl] for impl in ("tritonprop", "naive", "torch"))
            throughput = "—" if _median(ours) is None else f"{ours[case.throughput_key]:.4g} {case.throughput_unit}"
            lines.append(
                f"| {case.op} | {case.label} | {ours['dtype']} | {case.layout} | {mode} "
                f"| {_ms(ours)} | {_ms(naive)} | {_ms(native)} | {throughput} "
                f"| {_ratio(native, ours)} | {_ratio(naive, ours)} | {_peak(ours)} / {_peak(native)} "
                f"| {_others(by_impl)} | {_target(case, mode, by_impl, on_cuda)} |"
            )
    return "\n".join(lines)


def markdown(info: dict, table: str) -> str:
    lines = ["# tritonprop benchmarks", ""]
    if info["interpreted"]:
        lines += [f"**{timing.CPU_NOTE}.** The kernels ran under Triton's interpreter on tiny stand-in shapes; "
                  "these numbers only show that the harness works.", ""]
    lines += [
        f"{info['device']} · torch {info['torch']} · triton {info['triton']} · commit {info['commit'] or 'unknown'} "
        f"· {info['date']}{' · quick' if info['quick'] else ''}",
        "",
        "Medians in ms. \"ours vs X\" is t_X / t_tritonprop (above 1 means tritonprop is faster), measured in "
        "the same run; throughput counts bytes and FLOPs as BENCHMARKS.md does.",
        "",
        table,
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = timing.bench_device()
    info = header(device, args.quick)
    results = [(case, measure_case(case, device, args.quick)) for case in cases.cases_for(args.ops, device)]
    rows = [row for _, case_rows in results for row in case_rows]

    table = markdown_table(results, on_cuda=device.type == "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"header": info, "rows": rows}, indent=2) + "\n")
    (args.out / "bench.md").write_text(markdown(info, table))
    if info["interpreted"]:
        print(f"{timing.CPU_NOTE}.")
    print(table)
    print(f"\nwrote {args.out / 'bench.md'} and {args.out / 'bench.json'}")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
