"""The seq2seq Transformer and the char LM: tritonprop layers vs the torch.nn twin, step by step.

Same weights, same batches, same optimizer, dropout 0: the losses of every step must agree within
the fp32 tolerance, and so must the greedy decode. Sizes are tiny: every kernel runs interpreted.
"""
from __future__ import annotations

import math
import types

import pytest
import torch

from helpers import assert_close, require_demo_packages
from test_models_names import twin_losses, tritonprop_layers
from tritonprop.models import charlm, data_dates, data_text, seq2seq
from tritonprop.models.transformer import causal_mask

require_demo_packages()

SEQ2SEQ_ARGS = types.SimpleNamespace(d_model=8, heads=2, d_ff=16, encoder_layers=1, decoder_layers=1, dropout=0.0,
                                     train_size=32, val_size=4, train_mix="all", val_mix="all", tokenization="char")
CHARLM_ARGS = types.SimpleNamespace(d_model=8, heads=2, d_ff=16, num_layers=1, context=8, dropout=0.0,
                                    eval_windows=2, sample_length=4)
CORPUS = "the cat sat on the mat. the dog sat on the log. " * 4


def test_seq2seq_matches_torch_twin_first_steps():
    """Three steps by default: one interpreted seq2seq step runs six attention calls forward and back."""
    data = seq2seq.load_data(None, 0, SEQ2SEQ_ARGS)
    ours, twin, ours_model, twin_model = twin_losses(seq2seq.TASK, data, SEQ2SEQ_ARGS, steps=3, lr=0.01)
    assert_close(ours, twin, name="seq2seq losses, tritonprop vs torch.nn")
    # Greedy decoding of the trained pair: the same tokens.
    src, _, _ = seq2seq.encode_batch(data, data.pairs.val[:2])
    assert torch.equal(seq2seq.decode(ours_model, src), seq2seq.decode(twin_model, src))


@pytest.mark.slow
def test_seq2seq_matches_torch_twin():
    data = seq2seq.load_data(None, 0, SEQ2SEQ_ARGS)
    ours, twin, _, _ = twin_losses(seq2seq.TASK, data, SEQ2SEQ_ARGS, lr=0.01)
    assert_close(ours, twin, name="seq2seq losses, tritonprop vs torch.nn")
    assert ours[-3:].mean() < ours[:3].mean(), f"the loss did not fall: {ours.tolist()}"


def test_charlm_matches_torch_twin():
    data = data_text.build(CORPUS, "test", CHARLM_ARGS.context)
    ours, twin, ours_model, twin_model = twin_losses(charlm.TASK, data, CHARLM_ARGS, lr=0.01)
    assert_close(ours, twin, name="charlm losses, tritonprop vs torch.nn")
    assert ours[-3:].mean() < ours[:3].mean(), f"the loss did not fall: {ours.tolist()}"
    cpu = torch.device("cpu")
    ours_metrics, twin_metrics = charlm.evaluate(ours_model, data, cpu), charlm.evaluate(twin_model, data, cpu)
    assert ours_metrics["bpc"] == pytest.approx(twin_metrics["bpc"], rel=2e-5)


def test_seq2seq_evaluate_predict_artifacts(tmp_path):
    data = seq2seq.load_data(None, 0, SEQ2SEQ_ARGS)
    # torch.nn layers: this checks the task's plumbing; the twin tests check tritonprop's decode.
    model = seq2seq.build_model(data, torch.nn, SEQ2SEQ_ARGS)
    metrics = seq2seq.evaluate(model, data, torch.device("cpu"))
    assert 0 <= metrics["accuracy"] <= metrics["char_accuracy"] <= 1
    assert metrics["baseline"] == 0.0  # no held-out date is a training date, so the commonest answer never matches
    assert set(metrics["accuracy_by_format"]) == {fmt for _, _, fmt in data.pairs.val}
    extra = seq2seq.artifacts(model, data, tmp_path, torch.device("cpu"), metrics)
    lines = (tmp_path / extra["translations"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(data.pairs.val) and all(line[:5] in ("ok   ", "WRONG") for line in lines)
    answer = seq2seq.predict(model, data, "5 mars 2021", torch.device("cpu"))
    assert len(answer[0]) == 10 and set(answer[0]) <= set("0123456789-?")


def test_seq2seq_char_baseline_by_hand():
    pairs = data_dates.DatePairs(train=[("a", "2021-03-05", "x"), ("b", "2021-04-05", "x"), ("c", "1999-04-06", "x")],
                                 val=[("d", "2021-04-05", "x"), ("e", "1999-12-31", "x")])
    data = seq2seq.DatesData(pairs=pairs, tokenization="char", source_vocab=[seq2seq.PAD, seq2seq.UNK, "a"],
                             max_source_length=1)
    model = seq2seq.build_model(data, torch.nn, SEQ2SEQ_ARGS)
    metrics = seq2seq.evaluate(model, data, torch.device("cpu"))
    # Commonest character in each position of the training answers: 2021-04-05.
    assert metrics["baseline"] == 0.5
    assert metrics["char_baseline"] == pytest.approx((10 + 2) / 20)  # "1999-12-31" matches at '-', '-'


def test_seq2seq_takes_no_data_path(tmp_path):
    with pytest.raises(NotImplementedError, match="--data"):
        seq2seq.load_data(tmp_path, 0, SEQ2SEQ_ARGS)


def test_seq2seq_checkpoint_with_other_source_vocabulary_fails_clearly():
    data = seq2seq.load_data(None, 0, SEQ2SEQ_ARGS)
    saved = seq2seq.build_model(data, torch.nn, SEQ2SEQ_ARGS).state_dict()
    other = seq2seq.load_data(None, 0, types.SimpleNamespace(**{**vars(SEQ2SEQ_ARGS), "tokenization": "word"}))
    model = seq2seq.build_model(other, torch.nn, SEQ2SEQ_ARGS)
    with pytest.raises((ValueError, RuntimeError), match="source tokens|size mismatch"):
        model.load_state_dict(saved)


def test_charlm_sample_evaluate_and_unigram_baseline(tmp_path, capsys):
    data = data_text.build(CORPUS, "test", CHARLM_ARGS.context)
    model = charlm.build_model(data, torch.nn, CHARLM_ARGS)
    metrics = charlm.evaluate(model, data, torch.device("cpu"))
    assert metrics["eval_chars"] == CHARLM_ARGS.eval_windows * CHARLM_ARGS.context
    _, targets = charlm.held_out_windows(data, CHARLM_ARGS.context, CHARLM_ARGS.eval_windows)
    counts = {c: data.decode(data.train).count(c) + 1 for c in data.alphabet}
    total = sum(counts.values())
    expected = sum(-math.log2(counts[c] / total) for c in data.decode(targets.reshape(-1))) / targets.numel()
    assert metrics["baseline"] == pytest.approx(expected)
    extra = charlm.artifacts(model, data, tmp_path, torch.device("cpu"), metrics)
    text = (tmp_path / extra["samples"]).read_text(encoding="utf-8")
    prompt = data.decode(data.val[:charlm.PROMPT_LENGTH])
    assert text.startswith(prompt) and len(text.rstrip("\n")) == len(prompt) + CHARLM_ARGS.sample_length
    assert prompt in capsys.readouterr().out
    assert charlm.predict(model, data, "the ", torch.device("cpu"))[0].startswith("the ")


def test_causal_mask_blocks_the_future():
    mask = causal_mask(3, "cpu")
    assert mask.tolist() == [[False, True, True], [False, False, True], [False, False, False]]


def test_sequence_longer_than_the_model_is_an_error():
    data = data_text.build(CORPUS, "test", CHARLM_ARGS.context)
    model = charlm.build_model(data, torch.nn, CHARLM_ARGS)
    with pytest.raises(ValueError, match="max_length 8"):
        model.transformer(torch.zeros(1, 9, dtype=torch.long))
