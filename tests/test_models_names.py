"""The RNN name classifier and name generator: tritonprop layers vs the torch.nn twin, step by step.

Each model is built twice from the same code, once on tritonprop.ops and once on torch.nn, with the
same weights (state_dict copied across), the same batches and the same optimizer. The losses of
every step must agree within the fp32 tolerance. Sizes are tiny: every kernel runs interpreted.
"""
from __future__ import annotations

import importlib
import math
import types

import pytest
import torch

from helpers import assert_close, require_demo_packages
from tritonprop import ops
from tritonprop.models import data_names, namegen, names

require_demo_packages()

STEPS = 10


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
    losses = []
    for model, model_layers in ((ours, layers), (twin, torch.nn)):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        batches = task.batches(data, batch_size, torch.Generator().manual_seed(0))
        trace = []
        for _ in range(steps):
            loss = task.loss(model, next(batches), model_layers)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trace.append(loss.detach())
        losses.append(torch.stack(trace))
    return (*losses, ours, twin)


def tiny_names() -> data_names.NamesData:
    return data_names.build({
        "Italian": ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci"],
        "German": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"],
        "Irish": ["Murphy", "Kelly", "O'Sullivan", "Walsh", "Smith", "Byrne", "Ryan", "O'Brien"],
    }, "test")


NAMES_ARGS = types.SimpleNamespace(embed=8, hidden=8, num_layers=1)
NAMEGEN_ARGS = types.SimpleNamespace(embed=8, language_embed=4, hidden=8, num_layers=1, samples_per_language=1)


def test_names_classifier_matches_torch_twin():
    ours, twin, _, _ = twin_losses(names.TASK, tiny_names(), NAMES_ARGS)
    assert_close(ours, twin, name="names losses, tritonprop vs torch.nn")
    assert ours[-3:].mean() < ours[:3].mean(), f"the loss did not fall: {ours.tolist()}"


def test_name_generator_matches_torch_twin():
    ours, twin, _, _ = twin_losses(namegen.TASK, tiny_names(), NAMEGEN_ARGS)
    assert_close(ours, twin, name="namegen losses, tritonprop vs torch.nn")
    assert ours[-3:].mean() < ours[:3].mean(), f"the loss did not fall: {ours.tolist()}"


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


def test_namegen_samples_and_bpc(tmp_path, capsys):
    data = tiny_names()
    model = namegen.build_model(data, torch.nn, NAMEGEN_ARGS)
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
