"""The `tritonprop` command: `info`, `selfcheck`, `bench`, `train`, `predict` and `lesson`.

`tritonprop info` and `tritonprop selfcheck` cover every op of the op registry
(tritonprop/registry.py); `tritonprop bench` runs its benchmark case groups (bench/report.py).
`tritonprop train <task>` and `tritonprop predict <task>` are generated from the task registry
(models/registry.py): every registered task gets the training loop's options (models/train.py)
plus its own. A task whose module does not import is listed as unavailable, with the reason.
`tritonprop train mlp-numpy` is apart: the numpy-only MLP, with no torch in its loop.
`tritonprop lesson <name>` runs a small experiment that a doc explains (tritonprop/lessons.py).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
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
    width = max(17, *(len(op) + 1 for op in info["ops"]))
    for op, mode in info["ops"].items():
        print(f"  {op:<{width}}{mode}")
    if "recurrence" in info:
        # RNN, LSTM and GRU layers: persistent (one launch for all steps) or one launch per step.
        print(f"recurrence (rnn, lstm, gru): {info['recurrence']['rule']}")
        for shape, path in info["recurrence"]["launches"].items():
            print(f"  {shape}: {path}")
    return 0


def _selfcheck_dtypes(text: str) -> list[str]:
    from tritonprop import selfcheck

    return selfcheck.parse_dtypes(text)


def _selfcheck(args) -> int:
    from tritonprop import selfcheck

    return 0 if selfcheck.run(args.device, op_names=args.ops, dtypes=args.dtypes) else 1


def _op_names(text: str) -> list[str]:
    """--ops: comma-separated op names of the registry (tritonprop/registry.py)."""
    from tritonprop import registry

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in registry.OPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown op {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(registry.OPS)}")
    return names


# `tritonprop bench FLAG [options]`: the report that FLAG asks for instead of the timed one.
BENCH_REPORTS = {
    "--static": "static_sm90",  # the sm_90 compile report (bench/static_sm90.py)
    "--host": "host_overhead",  # the host overhead per op call, launches stubbed (bench/host_overhead.py)
}


def _bench(args) -> int:
    """`tritonprop bench [options]`: the timed report; with a flag of BENCH_REPORTS, that report
    instead, with the options that follow it."""
    for flag, module in BENCH_REPORTS.items():
        if flag in args.report_args:
            report_main = importlib.import_module(f"tritonprop.bench.{module}").main
            return report_main([arg for arg in args.report_args if arg != flag])
    from tritonprop.bench import report

    return report.main(args.report_args)


def _mlp_numpy_options(parser: argparse.ArgumentParser) -> None:
    from tritonprop.models.mlp_numpy import Config
    from tritonprop.models.train import positive_float, positive_int

    defaults = Config()
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="passes over the training set")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the initialisation and batch order (the held-out split is fixed)")
    parser.add_argument("--hidden", type=positive_int, default=defaults.hidden, help="width of the hidden layer")
    parser.add_argument("--lr", type=positive_float, default=defaults.lr, help="SGD learning rate")


MLP_NUMPY_HELP = "an MLP on scikit-learn's 8x8 digits, trained by the numpy autodiff engine alone (no torch)"


def _train_mlp_numpy(args) -> int:
    from tritonprop.models import mlp_numpy

    mlp_numpy.train(mlp_numpy.Config(epochs=args.epochs, seed=args.seed, hidden=args.hidden, lr=args.lr))
    return 0


def _print_summary(metrics: dict, out) -> None:
    print(f"{metrics['model']}: {metrics['steps']} steps, loss {metrics['initial_loss']:.4f} at the first step, "
          f"{metrics['final_loss']:.4f} over the last ones")
    if "accuracy" in metrics:
        print(f"held-out accuracy {metrics['accuracy']:.2%} (majority-class baseline {metrics['baseline']:.2%})")
    if "bpc" in metrics:
        print(f"held-out {metrics['bpc']:.3f} bits per char (unigram baseline {metrics['baseline']:.3f})")
    print(f"wrote {out}/ (checkpoint.pt, metrics.json"
          + "".join(f", {value}" for value in metrics.values() if isinstance(value, str) and value.endswith(".png"))
          + "".join(f", {name}" for name in metrics.get("inspect", [])) + ")")


def _fail(command: str, error: Exception) -> int:
    print(f"tritonprop {command}: error: {error}", file=sys.stderr)
    return 2


def _train_task(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args) -> int:
        from tritonprop.models import registry, train

        task = registry.load_task(name)
        try:
            metrics = train.run(task, args)
        except train.TrainingError as error:
            return _fail(f"train {name}", error)
        if metrics:  # rank 0 of a torchrun job, or a single process
            _print_summary(metrics, args.out)
        return 0
    return run


def _predict_task(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args) -> int:
        from tritonprop.models import registry, train

        task = registry.load_task(name)
        if task.predict is None:
            return _fail(f"predict {name}", f"the {name} task has no prediction from text; "
                                            "tasks that have one: " + ", ".join(_predicting_tasks()))
        try:
            device = train.resolve_device(args.device, train.Distributed())
            model, data = train.load_for_prediction(task, args.out or Path("runs") / name, device)
            lines = task.predict(model, data, args.text, device)
        except (train.TrainingError, ValueError) as error:
            return _fail(f"predict {name}", error)
        print("\n".join(lines))
        return 0
    return run


def _unavailable(reason: str) -> Callable[[argparse.Namespace], int]:
    def run(args) -> int:
        print(f"tritonprop: {reason}", file=sys.stderr)
        return 2
    return run


def _predicting_tasks() -> list[str]:
    from tritonprop.models import registry

    return [name for name, task in registry.available().items()
            if not isinstance(task, Exception) and task.predict is not None]


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it has none (None) or is a plain switch (False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _add_task_parsers(train, predict) -> None:
    from tritonprop.models import registry
    from tritonprop.models import train as training

    for name, task in registry.available().items():
        if isinstance(task, Exception):
            for sub, verb in ((train, "train"), (predict, "predict")):
                parser = sub.add_parser(name, help=f"(unavailable) {task}", add_help=False)
                # Whatever options follow, the answer is why the task cannot run.
                parser.set_defaults(run=_unavailable(f"{verb} {task}"), unavailable=True)
            continue
        parser = train.add_parser(name, help=task.description, description=task.description,
                                  formatter_class=_DefaultsFormatter)
        training.add_arguments(parser, task)
        parser.set_defaults(run=_train_task(name))
        what = "run the trained model on TEXT" if task.predict else "(no prediction from text for this task)"
        parser = predict.add_parser(name, help=f"{name}: {what}", description=f"{task.description}: {what}")
        parser.add_argument("text", metavar="TEXT")
        parser.add_argument("--out", type=Path, default=None,
                            help=f"the training run's output folder (default: runs/{name})")
        parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when present")
        parser.set_defaults(run=_predict_task(name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonprop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, device, backend, and how each op runs (compiled or interpreted)")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(run=_info)

    check = sub.add_parser("selfcheck", help="run each op forward and backward against torch on small inputs")
    check.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    check.add_argument("--ops", type=_op_names, default=None, metavar="OP[,OP...]",
                       help="check only these ops (default: every op; `tritonprop info` lists them)")
    check.add_argument("--dtypes", type=_selfcheck_dtypes, default=None, metavar="DTYPE[,DTYPE...]",
                       help="check in these dtypes (bf16, fp16, fp32), each against torch in fp32 on the same "
                            "rounded inputs (default: fp32 alone, within 1e-4)")
    check.set_defaults(run=_selfcheck)

    # Every option after `bench` (--help included) belongs to bench/report.py's own parser, or with
    # --static or --host to bench/static_sm90.py's or bench/host_overhead.py's.
    bench = sub.add_parser("bench", help="benchmark report (markdown + JSON); `tritonprop bench --help` for options; "
                                         "`tritonprop bench --static --help` for the static sm_90 compile report; "
                                         "`tritonprop bench --host --help` for the host overhead per op call",
                           add_help=False)
    bench.set_defaults(run=_bench)

    train = sub.add_parser("train", help="train a model (checkpoint, metrics.json and pictures in --out)")
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    predict = sub.add_parser("predict", help="run a trained model on text (e.g. predict names Dostoevsky)")
    predictors = predict.add_subparsers(dest="model", required=True, metavar="MODEL")
    _add_task_parsers(models, predictors)
    mlp = models.add_parser("mlp-numpy", help=MLP_NUMPY_HELP, description=MLP_NUMPY_HELP,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _mlp_numpy_options(mlp)
    mlp.set_defaults(run=_train_mlp_numpy)

    # `tritonprop lesson NAME`: each lesson (tritonprop/lessons.py) adds its own parser and runner.
    lesson = sub.add_parser("lesson", help="runnable lessons for learners, e.g. `tritonprop lesson conv` "
                                           "(GPUs hate loops: loop vs unfold vs Triton conv, timed)")
    from tritonprop import lessons

    lessons.add_parsers(lesson.add_subparsers(dest="lesson", required=True, metavar="LESSON"))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.report_args = rest
    elif rest and not getattr(args, "unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
