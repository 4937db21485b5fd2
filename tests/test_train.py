"""The training loop (models/train.py) on the CNN at its smallest: determinism, checkpoints and
--resume, metrics.json, --clip-grad, --amp, --epochs, --inspect, and its errors.

One uninterrupted run and one run cut in two and resumed carry most assertions: the interpreter
makes every step cost about a second.
"""
from __future__ import annotations

import json

import pytest
import torch

from tritonprop import ops
from tritonprop.cli import build_parser
from tritonprop.models import cnn, train
from tritonprop.models.inspection import Inspector
from test_data_mnist import write_real_digits_dir
from helpers import TOLERANCES, assert_close, require_demo_packages

require_demo_packages()

TINY = ["--widths", "4,8", "--strides", "2,2", "--batch-size", "8", "--device", "cpu", "--lr", "1e-2"]


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """120 real 8x8 digits as IDX files: evaluation on 24 held-out digits stays cheap."""
    return write_real_digits_dir(tmp_path_factory.mktemp("digits"))


def parse(*argv, data=None):
    return build_parser().parse_args(["train", "cnn", *TINY, *(["--data", str(data)] if data else []), *argv])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, digits_dir):
    """Four steps in one go, with --inspect (which must not change the training)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    metrics = train.run(cnn.TASK, parse("--steps", "4", "--out", str(out), "--inspect", data=digits_dir))
    return out, metrics


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, digits_dir):
    """Two steps, then --resume to four."""
    out = tmp_path_factory.mktemp("resumed")
    first = train.run(cnn.TASK, parse("--steps", "2", "--out", str(out), data=digits_dir))
    second = train.run(cnn.TASK, parse("--steps", "4", "--out", str(out), "--resume", data=digits_dir))
    return out, first, second


def test_same_seed_same_losses(uninterrupted, resumed):
    _, metrics = uninterrupted
    _, first, _ = resumed
    assert first["losses"] == metrics["losses"][:2]


def test_resume_gives_the_losses_of_an_uninterrupted_run(uninterrupted, resumed):
    out, metrics = uninterrupted
    resumed_out, _, second = resumed
    assert second["steps"] == 4 and len(second["losses"]) == 4
    assert second["losses"] == metrics["losses"]
    ours = torch.load(resumed_out / train.CHECKPOINT, weights_only=False)
    reference = torch.load(out / train.CHECKPOINT, weights_only=False)
    assert ours["step"] == reference["step"] == 4
    for name, tensor in reference["model"].items():
        assert torch.equal(ours["model"][name], tensor), name


def test_metrics_json(uninterrupted):
    out, metrics = uninterrupted
    written = json.loads((out / train.METRICS).read_text())
    for key in ("model", "steps", "final_loss", "baseline", "accuracy", "device", "samples_per_second",
                "train_seconds", "losses"):
        assert key in written, key
    assert written["model"] == "cnn" and written["steps"] == 4 and written["device"] == "cpu"
    assert written["final_loss"] == pytest.approx(sum(metrics["losses"]) / 4)
    assert written["val_images"] == 24 and 0 <= written["accuracy"] <= 1 and 0 < written["baseline"] < 0.5


def test_checkpoint_loads_back(uninterrupted):
    out, _ = uninterrupted
    model, data = train.load_for_prediction(cnn.TASK, out, torch.device("cpu"))
    saved = torch.load(out / train.CHECKPOINT, weights_only=False)["model"]
    assert isinstance(model, cnn.CNN) and not model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert data.image_size == 8 and len(data.val_y) == 24


def test_inspect_pictures(uninterrupted, resumed):
    out, metrics = uninterrupted
    assert metrics["inspect"] == ["activations.png", "gradients.png", "update_ratio.png", "bn_stats.png",
                                  "grad_norm.png"]
    for name in metrics["inspect"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # One gradient norm per step in metrics.json, and only with --inspect.
    norms = json.loads((out / train.METRICS).read_text())["grad_norm"]
    assert len(norms) == 4 and all(0 < norm < float("inf") for norm in norms), norms
    _, first, second = resumed
    assert "grad_norm" not in first and "grad_norm" not in second


def test_compile_trains_with_the_eager_losses(tmp_path, uninterrupted, digits_dir):
    metrics = train.run(cnn.TASK, parse("--steps", "4", "--out", str(tmp_path), "--compile", "aot_eager",
                                        data=digits_dir))
    assert metrics["losses"] == uninterrupted[1]["losses"]


def test_compile_refuses_inspect(tmp_path, digits_dir):
    with pytest.raises(train.TrainingError, match="--inspect .* --compile"):
        train.run(cnn.TASK, parse("--steps", "1", "--out", str(tmp_path), "--compile", "--inspect", data=digits_dir))


def test_resume_refuses_other_model_options(uninterrupted, digits_dir):
    out, _ = uninterrupted
    args = parse("--widths", "4,16", "--steps", "5", "--out", str(out), "--resume", data=digits_dir)
    with pytest.raises(train.TrainingError, match=r"widths: \[4, 8\] then, \[4, 16\] now"):
        train.run(cnn.TASK, args)


def test_resume_without_checkpoint(tmp_path, digits_dir):
    with pytest.raises(train.TrainingError, match="no checkpoint to resume from"):
        train.run(cnn.TASK, parse("--steps", "1", "--out", str(tmp_path), "--resume", data=digits_dir))


def test_bad_data_names_the_file(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(train.TrainingError, match=f"{missing}: not a directory"):
        train.run(cnn.TASK, build_parser().parse_args(["train", "cnn", "--device", "cpu", "--data", str(missing),
                                                       "--out", str(tmp_path)]))


def test_steps_and_epochs_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        parse("--steps", "3", "--epochs", "1")
    assert "not allowed with argument" in capsys.readouterr().err


def test_epochs_count_steps():
    data = cnn.load_data("digits8x8", 0, None)
    args = parse("--epochs", "0.5")
    assert train.total_steps(cnn.TASK, args, data) == -(-len(data.train_y) // 2 // 8)
    assert train.total_steps(cnn.TASK, parse(), data) == cnn.TASK.default_steps


def _tiny_model(layers):
    torch.manual_seed(0)
    data = cnn.load_data("digits8x8", 0, None)
    return cnn.CNN(8, 10, (4, 8), (2, 2), layers), data


def _grad_norm(model):
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))


def test_clip_grad_limits_the_gradient_norm():
    # The loop's mechanics, on the torch.nn twin (the CNN's kernels are tested above).
    model, data = _tiny_model(torch.nn)
    batch = next(cnn.batches(data, 8, torch.Generator().manual_seed(0)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    train.training_step(model, optimizer, batch, cnn.TASK, torch.nn, amp=False, clip_grad=None)
    unclipped = _grad_norm(model)
    train.training_step(model, optimizer, batch, cnn.TASK, torch.nn, amp=False, clip_grad=unclipped / 10)
    assert unclipped > 0 and _grad_norm(model) == pytest.approx(unclipped / 10, rel=1e-4)


def test_optimizer_step_uses_the_clipped_gradient(tmp_path):
    """SGD (no momentum, no weight decay) moves each parameter by -lr * its gradient, so the change must be
    -lr * the clipped gradient g * max_norm / ||g||; a clip applied after optimizer.step() would leave
    -lr * g. The inspector records ||g||, the norm before clipping."""
    model, data = _tiny_model(torch.nn)
    batch = next(cnn.batches(data, 8, torch.Generator().manual_seed(0)))
    # The unclipped gradient at the starting weights, outside training_step.
    cnn.TASK.loss(model, batch, torch.nn).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    norm = float(torch.linalg.vector_norm(grad))
    max_norm, lr = norm / 10, 1.0
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    inspector = Inspector(model, 0, 0, clip_grad=max_norm)
    inspector.begin_step(0)
    train.training_step(model, torch.optim.SGD(model.parameters(), lr=lr), batch, cnn.TASK, torch.nn, amp=False,
                        clip_grad=max_norm, inspector=inspector)
    inspector.after_update(0)
    inspector.remove()
    change = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    assert_close(change, -lr * grad * (max_norm / norm), name="parameter change vs -lr * clipped gradient")
    unclipped = -lr * grad
    assert not torch.allclose(change, unclipped, **TOLERANCES[torch.float32]), "the step used the unclipped gradient"
    assert inspector.grad_norms == [pytest.approx(norm, rel=1e-5)]
    assert "grad_norm.png" in inspector.write(tmp_path)


def test_amp_runs_the_kernels_in_bf16_on_the_cpu():
    model, data = _tiny_model(ops)
    seen = []
    model.features[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    batch = next(cnn.batches(data, 4, torch.Generator().manual_seed(0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = train.training_step(model, optimizer, batch, cnn.TASK, ops, amp=True, clip_grad=None)
    assert seen == [torch.bfloat16]
    # The loss comes out of autocast in fp32 (cross-entropy is on autocast's fp32 list), the
    # parameters and their gradients stay fp32.
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())


def test_inspector_without_batch_norm(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inspector = Inspector(model, 0, 2)
    norms = []
    for step in range(3):
        inspector.begin_step(step)
        loss = model(torch.randn(5, 3)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        norms.append(_grad_norm(model))
        inspector.before_update()  # no norm given (nothing clipped): the inspector measures it
        optimizer.step()
        inspector.after_update(step)
    inspector.remove()
    assert sorted(inspector.activations) == [0, 1, 2] and sorted(inspector.gradients) == [0, 1, 2]
    assert inspector.layer_order == ["0", "1", "2"]
    # Weight matrices only (dim >= 2): one ratio per step each.
    assert {name: len(r) for name, r in inspector.ratios.items()} == {"0.weight": 3, "2.weight": 3}
    assert inspector.grad_norms == pytest.approx(norms, rel=1e-6) and inspector.grad_norm_steps == [0, 1, 2]
    assert inspector.write(tmp_path) == ["activations.png", "gradients.png", "update_ratio.png", "grad_norm.png"]


def test_shard_splits_every_tensor_along_the_batch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    distributed = train.Distributed()
    x, y = torch.arange(8).reshape(4, 2), torch.arange(4)
    shard_x, shard_y = train.shard((x, y), distributed)
    assert torch.equal(shard_x, x[2:]) and torch.equal(shard_y, y[2:])
    with pytest.raises(train.TrainingError, match="does not split evenly over 2 processes"):
        train.shard((torch.arange(3),), distributed)
