"""`tritonprop train <task>` and `tritonprop predict <task>`: a smoke run of every registered task.

The tasks come from the registry, so every model gets its smoke run as soon as its module
exists; each runs a couple of steps with its own tiny settings (`tags["smoke_args"]`).
"""
from __future__ import annotations

import json
import math
import re

import pytest

from tritonprop import cli
from tritonprop.models import registry
from test_data_mnist import write_real_digits_dir
from helpers import require_demo_packages

require_demo_packages()

AVAILABLE = registry.available()


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return write_real_digits_dir(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def names_dir(tmp_path_factory):
    """The PyTorch tutorial's format, small: evaluating thousands of Faker names under the interpreter
    is what a smoke run would otherwise spend its time on."""
    directory = tmp_path_factory.mktemp("names")
    surnames = {"English": "Smith Jones Taylor Brown Wilson Evans Thomas Roberts Walker Davies",
                "German": "Muller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann",
                "Italian": "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco"}
    for language, names in surnames.items():
        (directory / f"{language}.txt").write_text("\n".join(names.split()) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, digits_dir, names_dir):
    """smoke(name) -> (exit code, out dir, stdout): two steps of the task's tiny model with --inspect,
    run once per module."""
    runs = {}

    def run(name, capsys):
        if name not in runs:
            task = AVAILABLE[name]
            out = tmp_path_factory.mktemp(f"smoke-{name}")
            argv = ["train", name, "--device", "cpu", "--steps", "2", "--batch-size", "4", "--out", str(out),
                    "--inspect", *task.tags.get("smoke_args", [])]
            # Small data the test writes: evaluation under the interpreter is what a smoke run costs.
            if name in ("cnn", "vision"):  # 24 held-out digits instead of 359
                argv += ["--data", str(digits_dir)]
            if name in ("names", "namegen"):
                argv += ["--data", str(names_dir)]
            code = cli.main(argv)
            runs[name] = (code, out, capsys.readouterr().out)
        return runs[name]
    return run


@pytest.mark.parametrize("name", list(registry.TASKS))
def test_train_smoke(name, smoke, capsys):
    task = AVAILABLE[name]
    if isinstance(task, Exception):
        pytest.skip(str(task))
    code, out, stdout = smoke(name, capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == name and metrics["steps"] == 2 and len(metrics["losses"]) == 2
    assert math.isfinite(metrics["final_loss"]) and "baseline" in metrics
    assert ("accuracy" if task.tags.get("kind") == "classifier" else "bpc") in metrics
    assert (out / "checkpoint.pt").is_file()
    assert f"{name}: 2 steps" in stdout
    # --inspect works for every model; the BatchNorm picture only where there is BatchNorm.
    assert {"activations.png", "gradients.png", "update_ratio.png"} <= set(metrics["inspect"])
    assert all((out / picture).stat().st_size > 0 for picture in metrics["inspect"])


def test_predict_names(smoke, capsys):
    if isinstance(AVAILABLE["names"], Exception):
        pytest.skip(str(AVAILABLE["names"]))
    _, out, _ = smoke("names", capsys)
    assert cli.main(["predict", "names", "Dostoevsky", "--out", str(out), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    probabilities = [float(line.split()[-1]) for line in lines]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6


def test_predict_refuses_a_task_without_prediction(capsys):
    assert cli.main(["predict", "cnn", "7"]) == 2
    assert "the cnn task has no prediction from text" in capsys.readouterr().err


def test_bad_data_is_reported_with_the_file(tmp_path, capsys):
    bad = tmp_path / "mnist"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte").write_bytes(b"")
    (bad / "train-labels-idx1-ubyte").write_bytes(b"")
    assert cli.main(["train", "cnn", "--device", "cpu", "--data", str(bad), "--out", str(tmp_path)]) == 2
    assert f"error: {bad / 'train-images-idx3-ubyte'}: empty file" in capsys.readouterr().err


def test_vision_names_the_bad_architecture_and_the_option_it_refuses(tmp_path, capsys):
    if isinstance(AVAILABLE["vision"], Exception):
        pytest.skip(str(AVAILABLE["vision"]))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "vision", "--arch", "resnt18"])
    assert exit_info.value.code == 2
    assert ("argument --arch: unknown torchvision classification model 'resnt18' (did you mean resnet18"
            in capsys.readouterr().err)
    # Refused before any data is read or model built, as an error of the command, not a traceback.
    assert cli.main(["train", "vision", "--device", "cpu", "--width-mult", "0.5", "--out", str(tmp_path)]) == 2
    assert ("error: --width-mult: --arch resnet18 has no channel multiplier; only mobilenet_v2"
            in capsys.readouterr().err)


def test_steps_and_epochs_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "cnn", "--steps", "2", "--epochs", "1"])
    assert exit_info.value.code == 2
    assert "--epochs: not allowed with argument --steps" in capsys.readouterr().err


def test_unavailable_task_is_listed_not_crashed_on(monkeypatch, capsys):
    monkeypatch.setitem(registry.TASKS, "ghost", "tritonprop.models.no_such_module")
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert re.search(r"ghost\s+\(unavailable\) ghost: unavailable", capsys.readouterr().out)
    assert cli.main(["train", "ghost", "--steps", "1"]) == 2
    assert "No module named 'tritonprop.models.no_such_module'" in capsys.readouterr().err


def test_mlp_numpy_still_trains(capsys):
    assert cli.main(["train", "mlp-numpy", "--epochs", "1"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out

