"""The `tritonprop` command: `info`, `selfcheck`, `bench`, `train` (a later issue adds `predict`)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Callable


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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _mlp_numpy_options(parser: argparse.ArgumentParser) -> None:
    from tritonprop.models.mlp_numpy import Config

    defaults = Config()
    parser.add_argument("--epochs", type=_positive_int, default=defaults.epochs, help="passes over the training set")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the initialisation and batch order (the held-out split is fixed)")
    parser.add_argument("--hidden", type=_positive_int, default=defaults.hidden, help="width of the hidden layer")
    parser.add_argument("--lr", type=_positive_float, default=defaults.lr, help="SGD learning rate")


def _train_mlp_numpy(args) -> int:
    from tritonprop.models import mlp_numpy

    mlp_numpy.train(mlp_numpy.Config(epochs=args.epochs, seed=args.seed, hidden=args.hidden, lr=args.lr))
    return 0


@dataclass(frozen=True)
class Trainer:
    """One `tritonprop train NAME`: its help line, its own options, and the function that runs it."""

    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# A new model is one more entry here; each gets `tritonprop train NAME --help` with its own options.
TRAINERS = {
    "mlp-numpy": Trainer(
        help="an MLP on scikit-learn's 8x8 digits, trained by the numpy autodiff engine alone (no torch)",
        add_options=_mlp_numpy_options,
        run=_train_mlp_numpy,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonprop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, device, backend, and how each op runs (compiled or interpreted)")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(run=_info)

    check = sub.add_parser("selfcheck", help="run each op forward and backward against torch on small inputs")
    check.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    check.set_defaults(run=_selfcheck)

    # Every option after `bench` (--help included) belongs to bench/report.py's own parser.
    bench = sub.add_parser("bench", help="benchmark report (markdown + JSON); `tritonprop bench --help` for options",
                           add_help=False)
    bench.set_defaults(run=_bench)

    train = sub.add_parser("train", help="train a demo model and report its held-out accuracy")
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL",
                                  help=f"one of: {', '.join(TRAINERS)}")
    for name, trainer in TRAINERS.items():
        model = models.add_parser(name, help=trainer.help, description=trainer.help,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        trainer.add_options(model)
        model.set_defaults(run=trainer.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.report_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
