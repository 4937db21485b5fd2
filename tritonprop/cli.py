"""The `tritonprop` command: `info`, `selfcheck`, `bench` (later issues add `train` and `predict`)."""
from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    from tritonprop import __version__, backend

    info = backend.describe()
    if args.json:
        print(json.dumps({"tritonprop": __version__, **info}, indent=2))
        return 0
    print(f"tritonprop {__version__}")
    for key in ("python", "torch", "triton", "numpy", "device", "cuda_available", "triton_interpret", "backend"):
        print(f"  {key:<17}{info[key]}")
    print("ops:")
    for op, mode in info["ops"].items():
        print(f"  {op:<17}{mode}")
    return 0


def _selfcheck(args) -> int:
    from tritonprop import selfcheck

    return 0 if selfcheck.run(args.device) else 1


def _bench(args) -> int:
    from tritonprop.bench import report

    return report.main(args.report_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonprop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, device, backend, and how each op runs (compiled or interpreted)")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(run=_info)

    check = sub.add_parser("selfcheck", help="run every op forward and backward against torch on small inputs")
    check.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    check.set_defaults(run=_selfcheck)

    bench = sub.add_parser("bench", help="benchmark report (markdown + JSON); options go to bench/report.py",
                           add_help=False)
    bench.add_argument("report_args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
