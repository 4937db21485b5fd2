"""The seq2seq Transformer: human-written dates in four languages -> ISO 8601, greedy decoding.

    source tokens -> encoder (self-attention with a key-padding mask) -> memory
    <s> 2 0 2 1 - 0 3 -> decoder (causal self-attention, cross-attention to memory) -> 2 0 2 1 - 0 3 - 0 5

Every layer is from `layers` (models/transformer.py); the loss is `layers.CrossEntropyLoss`. The
target is always ten characters, so target batches need no padding. The source is padded with
index 0 and the encoder and cross-attention ignore it through the key-padding mask.

Evaluation is exact match of the greedy decode on held-out dates (which share no calendar date with
the training dates), with the per-character accuracy and the accuracy of each format beside it.

The representation options (`--tokenization`, `--train-mix`, `--val-mix`) are the knobs of the
experiment in docs/models.md.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from tritonprop.models import data_dates, data_names
from tritonprop.models.names import check_same_vocabulary
from tritonprop.models.task import Task
from tritonprop.models.transformer import EncoderDecoder

DEFAULTS = dict(d_model=128, heads=4, d_ff=256, encoder_layers=2, decoder_layers=2, dropout=0.1,
                train_size=20000, val_size=2000, train_mix="all", val_mix="all", tokenization="char")
PAD, UNK = "<pad>", "<unk>"
BOS, EOS = "<s>", "</s>"
TARGET_VOCAB = [PAD, BOS, EOS] + list("0123456789-")
ISO_LENGTH = 10
# How many held-out examples translations.txt shows.
TRANSLATIONS = 200
EVAL_BATCH = 500


@dataclass
class DatesData:
    pairs: data_dates.DatePairs
    tokenization: str
    source_vocab: list[str]      # index 0 padding, 1 unknown token
    max_source_length: int

    def encode_source(self, text: str) -> list[int]:
        index = {token: i for i, token in enumerate(self.source_vocab)}
        return [index.get(token, 1) for token in data_dates.tokenize(text, self.tokenization)]


def option(args, name: str):
    return getattr(args, name, DEFAULTS[name]) if args is not None else DEFAULTS[name]


def add_arguments(parser) -> None:
    parser.add_argument("--d-model", type=int, default=DEFAULTS["d_model"], help="Transformer width")
    parser.add_argument("--heads", type=int, default=DEFAULTS["heads"], help="attention heads")
    parser.add_argument("--d-ff", type=int, default=DEFAULTS["d_ff"], help="feed-forward width")
    parser.add_argument("--encoder-layers", type=int, default=DEFAULTS["encoder_layers"])
    parser.add_argument("--decoder-layers", type=int, default=DEFAULTS["decoder_layers"])
    parser.add_argument("--dropout", type=float, default=DEFAULTS["dropout"])
    parser.add_argument("--train-size", type=int, default=DEFAULTS["train_size"], help="training dates")
    parser.add_argument("--val-size", type=int, default=DEFAULTS["val_size"], help="held-out dates")
    parser.add_argument("--train-mix", choices=sorted(data_dates.FORMAT_MIXES), default=DEFAULTS["train_mix"],
                        help="the formats the training dates are written in")
    parser.add_argument("--val-mix", choices=sorted(data_dates.FORMAT_MIXES), default=DEFAULTS["val_mix"],
                        help="the formats the held-out dates are written in")
    parser.add_argument("--tokenization", choices=data_dates.TOKENIZATIONS, default=DEFAULTS["tokenization"],
                        help="how the source is split into tokens (the target is always characters)")


def load_data(data_path: Path | None, seed: int, args) -> DatesData:
    if data_path is not None:
        raise NotImplementedError("seq2seq generates its dates from --seed; it takes no --data")
    pairs = data_dates.generate(seed, option(args, "train_size"), option(args, "val_size"),
                                option(args, "train_mix"), option(args, "val_mix"))
    tokenization = option(args, "tokenization")
    # The vocabulary comes from the training split only: a held-out token never seen in training is <unk>.
    counts = Counter(token for text, _, _ in pairs.train for token in data_dates.tokenize(text, tokenization))
    longest = max(len(data_dates.tokenize(text, tokenization)) for text, _, _ in pairs.train + pairs.val)
    return DatesData(pairs=pairs, tokenization=tokenization, source_vocab=[PAD, UNK] + sorted(counts),
                     max_source_length=longest)


class DateTranslator(torch.nn.Module):
    """The encoder-decoder plus the vocabularies it was trained with (saved in its state_dict)."""

    def __init__(self, data: DatesData, layers, args):
        super().__init__()
        self.source_vocab = list(data.source_vocab)
        self.transformer = EncoderDecoder(
            len(data.source_vocab), len(TARGET_VOCAB), d_model=option(args, "d_model"), heads=option(args, "heads"),
            d_ff=option(args, "d_ff"), encoder_layers=option(args, "encoder_layers"),
            decoder_layers=option(args, "decoder_layers"), max_src_length=data.max_source_length,
            max_tgt_length=ISO_LENGTH + 1, dropout=option(args, "dropout"), layers=layers)

    def forward(self, src, tgt_in):
        return self.transformer(src, tgt_in)

    def get_extra_state(self):
        return {"source_vocab": self.source_vocab}

    def set_extra_state(self, state):
        check_same_vocabulary("source tokens", state["source_vocab"], self.source_vocab)


def build_model(data: DatesData, layers, args) -> DateTranslator:
    return DateTranslator(data, layers, args)


def encode_batch(data: DatesData, examples) -> tuple[torch.Tensor, ...]:
    """(source [B, S] padded with 0, decoder input [B, 11] starting with <s>, target [B, 11] ending with </s>)."""
    sources = [data.encode_source(text) for text, _, _ in examples]
    width = max(len(s) for s in sources)
    src = torch.tensor([s + [0] * (width - len(s)) for s in sources], dtype=torch.long)
    target = torch.tensor([[TARGET_VOCAB.index(c) for c in iso] for _, iso, _ in examples], dtype=torch.long)
    bos = torch.full((len(examples), 1), TARGET_VOCAB.index(BOS), dtype=torch.long)
    eos = torch.full((len(examples), 1), TARGET_VOCAB.index(EOS), dtype=torch.long)
    return src, torch.cat([bos, target], 1), torch.cat([target, eos], 1)


def batches(data: DatesData, batch_size: int, generator: torch.Generator):
    order = data_names.shuffled_forever(len(data.pairs.train), generator)
    while True:
        yield encode_batch(data, [data.pairs.train[next(order)] for _ in range(batch_size)])


def loss(model: torch.nn.Module, batch: tuple, layers) -> torch.Tensor:
    src, tgt_in, tgt_out = (t.to(next(model.parameters()).device) for t in batch)
    logits = model(src, tgt_in)
    return layers.CrossEntropyLoss(ignore_index=0)(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))


def decode(model: DateTranslator, src: torch.Tensor) -> torch.Tensor:
    return model.transformer.greedy_decode(src, TARGET_VOCAB.index(BOS), ISO_LENGTH)


def tokens_to_text(tokens: list[int]) -> str:
    return "".join(TARGET_VOCAB[t] if len(TARGET_VOCAB[t]) == 1 else "?" for t in tokens)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: DatesData, device) -> dict:
    was_training = model.training
    model.eval()
    exact, chars, answers = [], [], []
    for start in range(0, len(data.pairs.val), EVAL_BATCH):
        src, _, tgt_out = encode_batch(data, data.pairs.val[start: start + EVAL_BATCH])
        decoded = decode(model, src.to(device)).cpu()
        correct = decoded == tgt_out[:, :ISO_LENGTH]
        exact.append(correct.all(1))
        chars.append(correct.float().mean(1))
        answers += [tokens_to_text(tokens) for tokens in decoded.tolist()]
    model.train(was_training)
    exact, chars = torch.cat(exact), torch.cat(chars)
    by_format = {}
    for name in sorted({fmt for _, _, fmt in data.pairs.val}):
        rows = torch.tensor([fmt == name for _, _, fmt in data.pairs.val])
        by_format[name] = round(float(exact[rows].float().mean()), 4)
    # The baseline answers every date with the commonest training answer, character by character
    # (the commonest whole answer would score 0: no held-out date is a training date).
    targets = torch.tensor([[TARGET_VOCAB.index(c) for c in iso] for _, iso, _ in data.pairs.train])
    majority = torch.mode(targets, dim=0).values
    held_out = torch.tensor([[TARGET_VOCAB.index(c) for c in iso] for _, iso, _ in data.pairs.val])
    return {
        "accuracy": float(exact.float().mean()),
        "char_accuracy": float(chars.mean()),
        "baseline": float((held_out == majority).all(1).float().mean()),
        "char_baseline": float((held_out == majority).float().mean()),
        "accuracy_by_format": by_format,
        "tokenization": data.tokenization,
        "source_vocab": len(data.source_vocab),
        # The model's answers to the first held-out dates, which `artifacts` writes out (and replaces
        # by the file's name): greedy decoding twice would double the cost of evaluation.
        "translations": answers[:TRANSLATIONS],
    }


def artifacts(model: torch.nn.Module, data: DatesData, out_dir: Path, device, metrics: dict) -> dict:
    """A text file of held-out examples with the model's answers (decoded by `evaluate`), mistakes first."""
    lines = []
    for answer, (text, iso, _) in zip(metrics["translations"], data.pairs.val):
        lines.append(f"{'ok   ' if answer == iso else 'WRONG'} {text!r:<40} -> {answer}  (true {iso})")
    lines.sort()
    path = Path(out_dir) / "translations.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"translations": path.name}


@torch.no_grad()
def predict(model: torch.nn.Module, data: DatesData, text: str, device) -> list[str]:
    tokens = data_dates.tokenize(text.strip(), data.tokenization)
    if not tokens:
        raise ValueError("predict seq2seq: the date is empty")
    if len(tokens) > data.max_source_length:
        raise ValueError(f"predict seq2seq: {len(tokens)} tokens, but the model reads at most {data.max_source_length}")
    unknown = sorted({t for t in tokens if t not in data.source_vocab})
    was_training = model.training
    model.eval()
    decoded = decode(model, torch.tensor([data.encode_source(text.strip())], device=device))[0].tolist()
    model.train(was_training)
    lines = [tokens_to_text(decoded)]
    if unknown:
        lines.append(f"(tokens never seen in training, read as {UNK}: {unknown})")
    return lines


TASK = Task(
    name="seq2seq",
    description="Transformer encoder-decoder: human-written dates (en/fr/de/es, many formats) -> ISO 8601",
    load_data=load_data,
    build_model=build_model,
    batches=batches,
    loss=loss,
    evaluate=evaluate,
    default_steps=4000,
    default_batch_size=128,
    default_lr=1e-3,
    artifacts=artifacts,
    predict=predict,
    add_arguments=add_arguments,
    epoch_size=lambda data: len(data.pairs.train),
    tags={"kind": "classifier", "smoke_args": ["--d-model", "8", "--heads", "2", "--d-ff", "16", "--encoder-layers",
                                               "1", "--decoder-layers", "1", "--train-size", "64", "--val-size", "8"]},
)
