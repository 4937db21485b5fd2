"""The RNN name classifier and name generator: tritonprop layers vs the torch.nn twin, step by step.

Each model is built twice from the same code, once on tritonprop.ops and once on torch.nn, with the
same weights (state_dict copied across), the same batches and the same optimizer. The losses of
every step must agree within the fp32 tolerance. Sizes are tiny: every kernel runs interpreted.
Both models are checked with each recurrent cell (`--cell rnn`, `lstm`, `gru`), and the classifier's
`--loss nll` (LogSoftmax + NLLLoss) against its default cross-entropy.
"""
from __future__ import annotations

import importlib
import math
import types

import json

import pytest
import torch

from helpers import assert_close, require_demo_packages, task_losses
from tritonprop import cli, ops
from tritonprop.models import data_names, namegen, names, train

require_demo_packages()

STEPS = 10
CELLS = list(names.CELLS)


def tritonprop_layers():
    """tritonprop.ops, plus RNN and MultiheadAttention from their modules until ops exports them."""
    namespace = types.SimpleNamespace(**{name: getattr(ops, name) for name in dir(ops) if not name.startswith("_")})
    for name, module in (("RNN", "tritonprop.ops.rnn"), ("MultiheadAttention", "tritonprop.ops.attention")):
        if not hasattr(namespace, name):
            try:
                setattr(namespace, name, getattr(importlib.import_module(module), name))
            except (ImportError, AttributeError) as error:
                pytest.skip(f"tritonprop's {name} is not available yet: {error}")
    return namespace


def twin_losses(task, data, args, *, steps=STEPS, batch_size=4, lr=0.01):
    """Per-step training losses of the tritonprop model and of its torch.nn twin from the same weights."""
    torch.manual_seed(0)
    layers = tritonprop_layers()
    ours = task.build_model(data, layers, args)
    twin = task.build_model(data, torch.nn, args)
    twin.load_state_dict(ours.state_dict())
    losses = [task_losses(task, model, model_layers, data, batch_size, steps, torch.optim.Adam(model.parameters(), lr=lr))
              for model, model_layers in ((ours, layers), (twin, torch.nn))]
    return (*losses, ours, twin)


def tiny_names() -> data_names.NamesData:
    return data_names.build({
        "Italian": ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci"],
        "German": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"],
        "Irish": ["Murphy", "Kelly", "O'Sullivan", "Walsh", "Smith", "Byrne", "Ryan", "O'Brien"],
    }, "test")


NAMES_ARGS = types.SimpleNamespace(embed=8, hidden=8, num_layers=1)
NAMEGEN_ARGS = types.SimpleNamespace(embed=8, language_embed=4, hidden=8, num_layers=1, samples_per_language=1)


def with_cell(args: types.SimpleNamespace, cell: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(**vars(args), cell=cell)


def with_loss(args: types.SimpleNamespace, loss: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(**vars(args), loss=loss)


def write_names_dir(tmp_path):
    """Two languages of three names each, as `--data DIR` expects them."""
    data_dir = tmp_path / "names"
    data_dir.mkdir()
    for language, surnames in {"German": "Muller Schmidt Weber", "Italian": "Rossi Russo Ricci"}.items():
        (data_dir / f"{language}.txt").write_text("\n".join(surnames.split()) + "\n", encoding="utf-8")
    return data_dir


# Each gated cell runs once in the default run (the GRU here, the LSTM in the generator, whose
# sampling carries its (h, c)); the other under -m slow.
@pytest.mark.parametrize("cell", [pytest.param("lstm", marks=pytest.mark.slow), "gru", "rnn"])
def test_names_classifier_matches_torch_twin(cell):
    ours, twin, model, _ = twin_losses(names.TASK, tiny_names(), with_cell(NAMES_ARGS, cell))
    assert isinstance(model.rnn, getattr(ops, names.CELLS[cell]))
    assert_close(ours, twin, name=f"names ({cell}) losses, tritonprop vs torch.nn")
    assert ours[-3:].mean() < ours[:3].mean(), f"the loss did not fall: {ours.tolist()}"


@pytest.mark.parametrize("cell", ["lstm", pytest.param("gru", marks=pytest.mark.slow), "rnn"])
def test_name_generator_matches_torch_twin(cell):
    ours, twin, model, _ = twin_losses(namegen.TASK, tiny_names(), with_cell(NAMEGEN_ARGS, cell))
    assert isinstance(model.rnn, getattr(ops, names.CELLS[cell]))
    assert_close(ours, twin, name=f"namegen ({cell}) losses, tritonprop vs torch.nn")
    assert ours[-3:].mean() < ours[:3].mean(), f"the loss did not fall: {ours.tolist()}"


def test_namegen_step_by_step_state_matches_whole_sequence():
    """Sampling carries the layer's state from call to call; for an LSTM that is the pair (h, c)."""
    data = tiny_names()
    torch.manual_seed(0)
    model = namegen.build_model(data, tritonprop_layers(), with_cell(NAMEGEN_ARGS, "lstm"))
    chars = torch.tensor([[model.boundary, 3, 5, 2]])
    language = torch.tensor([1])
    with torch.no_grad():
        whole, (h_n, c_n) = model(chars, language)
        state, steps = None, []
        for t in range(chars.shape[1]):
            logits, state = model(chars[:, t: t + 1], language, state)
            steps.append(logits)
    assert isinstance(state, tuple) and len(state) == 2
    assert_close(torch.cat(steps, dim=1), whole, name="logits, step by step vs whole sequence")
    assert_close(state[0], h_n, name="h_n")
    assert_close(state[1], c_n, name="c_n")


def test_names_evaluate_artifacts_predict(tmp_path):
    data = tiny_names()
    model = names.build_model(data, tritonprop_layers(), NAMES_ARGS)
    metrics = names.evaluate(model, data, torch.device("cpu"))
    predicted, labels = names.predictions(model, data, torch.device("cpu"))
    assert metrics["accuracy"] == pytest.approx(float((predicted == labels).float().mean()))
    counts = torch.bincount(torch.tensor([label for _, label in data.train]), minlength=3)
    majority = int(counts.argmax())
    assert metrics["baseline"] == pytest.approx(sum(y == majority for _, y in data.val) / len(data.val))
    assert metrics["classes"] == 3

    extra = names.artifacts(model, data, tmp_path, torch.device("cpu"), metrics)
    assert (tmp_path / extra["confusion_matrix"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    lines = names.predict(model, data, "Rossini", torch.device("cpu"))
    assert len(lines) == 3
    probabilities = [float(line.split()[-1]) for line in lines]
    assert probabilities == sorted(probabilities, reverse=True)
    assert {line.split()[0] for line in lines} == set(data.languages)
    assert sum(probabilities) == pytest.approx(1.0, abs=2e-3)  # three classes: the top 3 are all of them


def test_names_predict_unknown_character_is_named():
    data = tiny_names()
    model = names.build_model(data, torch.nn, NAMES_ARGS)
    with pytest.raises(ValueError, match=r"\['ž'\]"):
        names.predict(model, data, "Rossiž", torch.device("cpu"))


def test_confusion_matrix_counts():
    predicted = torch.tensor([0, 1, 1, 2, 0])
    labels = torch.tensor([0, 1, 2, 2, 1])
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1]])
    assert torch.equal(names.confusion_matrix(predicted, labels, 3), expected)


def test_checkpoint_with_other_classes_names_the_unknown_class():
    data = tiny_names()
    saved = names.build_model(data, torch.nn, NAMES_ARGS).state_dict()
    other = data_names.build({"Italian": ["Rossi"], "German": ["Weber"], "Welsh": ["Jones"]}, "other")
    model = names.build_model(other, torch.nn, NAMES_ARGS)
    with pytest.raises(ValueError, match="Welsh"):
        model.load_state_dict(saved, strict=False)


@pytest.mark.parametrize("cell", CELLS)
def test_namegen_samples_and_bpc(cell, tmp_path, capsys):
    data = tiny_names()
    model = namegen.build_model(data, torch.nn, with_cell(NAMEGEN_ARGS, cell))
    metrics = namegen.evaluate(model, data, torch.device("cpu"))
    assert metrics["bpc"] > 0 and math.isfinite(metrics["bpc"])
    extra = namegen.artifacts(model, data, tmp_path, torch.device("cpu"), metrics)
    written = (tmp_path / extra["samples"]).read_text(encoding="utf-8").splitlines()
    assert [line.split()[0] for line in written] == data.languages
    assert capsys.readouterr().out.splitlines() == written
    # Sampling is seeded on its own: the same model gives the same names.
    assert namegen.predict(model, data, "German", torch.device("cpu")) == \
        namegen.predict(model, data, "German", torch.device("cpu"))
    with pytest.raises(ValueError, match="Klingon"):
        namegen.predict(model, data, "Klingon", torch.device("cpu"))


def test_namegen_unigram_baseline_by_hand():
    pad = data_names.PAD
    data = data_names.NamesData(languages=["A"], alphabet=[pad, "a", "b"], train=[("ab", 0)], val=[("a", 0)],
                                source="hand")
    # Add-one counts over a, b and the boundary after training on "ab": a 2, b 2, boundary 2 of 6.
    # The held-out "a" + boundary costs -log2(2/6) bits for each of its two targets.
    assert namegen.unigram_bits(data) == pytest.approx(math.log2(3))


@pytest.mark.parametrize("task", [names, namegen], ids=["names", "namegen"])
def test_checkpoint_of_another_cell_names_both_cells(task):
    data = tiny_names()
    args = NAMES_ARGS if task is names else NAMEGEN_ARGS
    saved = task.build_model(data, torch.nn, with_cell(args, "lstm")).state_dict()
    model = task.build_model(data, torch.nn, with_cell(args, "gru"))
    with pytest.raises(ValueError, match="checkpoint is of a lstm model, this model is gru"):
        model.load_state_dict(saved)
    # A checkpoint from before --cell has no cell in its extra state: it is an RNN's.
    saved = task.build_model(data, torch.nn, args).state_dict()
    extra = next(key for key in saved if key.endswith("_extra_state"))
    saved[extra] = {key: value for key, value in saved[extra].items() if key != "cell"}
    task.build_model(data, torch.nn, args).load_state_dict(saved)


def test_cli_trains_and_reloads_an_lstm(tmp_path, capsys):
    """`train namegen --cell lstm` saves the cell with its options; `predict` rebuilds an LSTM and samples
    with its (h, c) state."""
    data_dir = write_names_dir(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["train", "namegen", "--cell", "lstm", "--device", "cpu", "--steps", "1", "--batch-size", "2",
                     "--data", str(data_dir), "--out", str(out), "--embed", "4", "--language-embed", "2",
                     "--hidden", "4", "--samples-per-language", "1"]) == 0
    assert "namegen: 1 steps" in capsys.readouterr().out
    assert torch.load(out / train.CHECKPOINT, weights_only=False)["options"]["cell"] == "lstm"
    model, _ = train.load_for_prediction(namegen.TASK, out, torch.device("cpu"))
    assert isinstance(model.rnn, ops.LSTM)
    assert cli.main(["predict", "namegen", "German", "--out", str(out), "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_cli_rejects_an_unknown_cell(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "names", "--cell", "transformer"])
    assert "invalid choice: 'transformer'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# --loss nll: LogSoftmax + NLLLoss is cross-entropy, split in two ops
# ------------------------------------------------------------------------------------------------


def test_nll_loss_equals_cross_entropy_in_value_and_gradients():
    """The same weights and batch through `--loss cross_entropy` (one fused op on the logits) and `--loss nll`
    (LogSoftmax in the model, then NLLLoss): the same loss and the same gradient for every parameter, in fp64."""
    data = tiny_names()
    layers = tritonprop_layers()
    models = {}
    for loss in names.LOSSES:
        torch.manual_seed(0)  # the same initialisation for both: LogSoftmax has no parameters
        models[loss] = names.build_model(data, layers, with_loss(NAMES_ARGS, loss)).double()
    ce, nll = models["cross_entropy"], models["nll"]
    assert isinstance(nll.log_softmax, ops.LogSoftmax) and ce.log_softmax is None
    for (name, p), q in zip(ce.named_parameters(), nll.parameters()):
        assert torch.equal(p, q), f"{name}: the two models must start from the same weights"
    batch = names.encode_batch(data, data.train[:6])
    losses = {loss: names.loss(model, batch, layers) for loss, model in models.items()}
    for loss in losses.values():
        loss.backward()
    assert_close(losses["nll"], losses["cross_entropy"], name="NLL(log_softmax(z), y) vs CE(z, y)")
    for (name, p), q in zip(ce.named_parameters(), nll.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert_close(q.grad, p.grad, name=f"{name}.grad, nll vs cross_entropy")
    chars, lengths, labels = batch
    with torch.no_grad():
        logits, log_probs = ce(chars, lengths), nll(chars, lengths)
    # Both losses are torch's cross-entropy of the logits ...
    assert_close(losses["cross_entropy"], torch.nn.functional.cross_entropy(logits, labels),
                 name="CE vs torch's cross_entropy")
    # ... and log-probabilities rank the languages as the logits do: the same predictions.
    assert torch.equal(log_probs.argmax(-1), logits.argmax(-1))
    assert_close(log_probs.exp().sum(-1), torch.ones(len(labels), dtype=torch.float64),
                 name="probabilities of the nll model sum to 1")


def test_checkpoint_of_another_loss_names_both_losses():
    data = tiny_names()
    saved = names.build_model(data, torch.nn, with_loss(NAMES_ARGS, "nll")).state_dict()
    model = names.build_model(data, torch.nn, NAMES_ARGS)
    with pytest.raises(ValueError, match="trained with --loss nll, this model with --loss cross_entropy"):
        model.load_state_dict(saved)
    # A checkpoint from before --loss has no loss in its extra state: it is a cross-entropy model's.
    saved = model.state_dict()
    saved["_extra_state"] = {key: value for key, value in saved["_extra_state"].items() if key != "loss"}
    names.build_model(data, torch.nn, NAMES_ARGS).load_state_dict(saved)
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        names.build_model(data, torch.nn, with_loss(NAMES_ARGS, "mse"))


def test_cli_trains_and_predicts_with_nll(tmp_path, capsys):
    """`train names --loss nll` trains a few steps with a finite loss; the checkpoint keeps --loss, so
    `predict names` rebuilds the LogSoftmax model and prints probabilities that sum to 1."""
    out = tmp_path / "run"
    assert cli.main(["train", "names", "--loss", "nll", "--device", "cpu", "--steps", "3", "--batch-size", "2",
                     "--data", str(write_names_dir(tmp_path)), "--out", str(out), "--embed", "4", "--hidden", "4"]) == 0
    assert "names: 3 steps" in capsys.readouterr().out
    losses = json.loads((out / train.METRICS).read_text())["losses"]
    assert len(losses) == 3 and all(math.isfinite(loss) and loss > 0 for loss in losses), losses
    assert torch.load(out / train.CHECKPOINT, weights_only=False)["options"]["loss"] == "nll"
    model, _ = train.load_for_prediction(names.TASK, out, torch.device("cpu"))
    assert model.loss == "nll" and isinstance(model.log_softmax, ops.LogSoftmax)
    assert cli.main(["predict", "names", "Rossetti", "--out", str(out), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {line.split()[0] for line in lines} == {"German", "Italian"}
    assert sum(float(line.split()[-1]) for line in lines) == pytest.approx(1.0, abs=2e-3)
