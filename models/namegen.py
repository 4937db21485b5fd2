"""The name generator: a character RNN conditioned on a language, which samples new surnames.

Training is many:many with teacher forcing. Each name becomes

    input   <b> D o s t o e v s k y
    target      D o s t o e v s k y <b>

where <b> is one boundary token that starts and ends a name. The language enters at every step: its
embedding is concatenated to the character embedding, so the RNN cannot forget it on a long name.

    embeddings (torch) -> layers.RNN -> layers.Linear over the next character

`--cell lstm` or `--cell gru` takes `layers.LSTM` or `layers.GRU` instead (default rnn). The
recurrent state is kept opaque: a tensor h for RNN and GRU, the pair (h, c) for LSTM; sampling
passes back whatever the layer returned.

Padding is index 0 and `layers.CrossEntropyLoss(ignore_index=0)` skips it, so no packing is needed.
Sampling is 1:many: feed <b>, draw a character from the softmax, feed it back, until <b>.

Evaluation is the held-out loss per character in bits, next to a unigram baseline (the entropy of
the training characters, measured on the held-out names).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from tritonprop import ops
from tritonprop.models import data_names
from tritonprop.models.names import add_cell_argument, check_same_cell, check_same_vocabulary, recurrent_layer
from tritonprop.models.task import Task

DEFAULTS = dict(embed=32, language_embed=16, hidden=128, num_layers=1, samples_per_language=3, cell="rnn")
EVAL_BATCH = 512
MAX_NAME_LENGTH = 24
# The sampling stream is seeded on its own, so that samples do not depend on how long training ran.
SAMPLE_SEED = 0


class NameGenerator(torch.nn.Module):
    def __init__(self, languages, alphabet, layers, embed, language_embed, hidden, num_layers, cell="rnn"):
        super().__init__()
        self.languages = list(languages)
        self.alphabet = list(alphabet)
        self.cell = cell
        self.boundary = len(alphabet)   # one index past the alphabet (whose index 0 is padding)
        self.char_embedding = torch.nn.Embedding(len(alphabet) + 1, embed, padding_idx=0)
        self.language_embedding = torch.nn.Embedding(len(languages), language_embed)
        self.rnn = recurrent_layer(layers, cell)(embed + language_embed, hidden, num_layers=num_layers,
                                                 batch_first=True)
        self.head = layers.Linear(hidden, len(alphabet) + 1)

    def forward(self, chars: torch.Tensor, language: torch.Tensor, state=None):
        """(logits [B, T, vocab], state) for input characters [B, T] of languages [B].

        `state` is the recurrent layer's own: h_n for RNN and GRU, (h_n, c_n) for LSTM; None for zeros.
        Pass back what a call returned to continue the sequence."""
        language = self.language_embedding(language)[:, None, :].expand(-1, chars.shape[1], -1)
        output, state = self.rnn(torch.cat([self.char_embedding(chars), language], dim=-1), state)
        return self.head(output), state

    def get_extra_state(self):
        return {"languages": self.languages, "alphabet": self.alphabet, "cell": self.cell}

    def set_extra_state(self, state):
        check_same_cell(state, self.cell)
        check_same_vocabulary("languages", state["languages"], self.languages)
        check_same_vocabulary("alphabet", state["alphabet"], self.alphabet)


def option(args, name: str):
    return getattr(args, name, DEFAULTS[name]) if args is not None else DEFAULTS[name]


def add_arguments(parser) -> None:
    parser.add_argument("--embed", type=int, default=DEFAULTS["embed"], help="character embedding width")
    parser.add_argument("--language-embed", type=int, default=DEFAULTS["language_embed"],
                        help="language embedding width")
    parser.add_argument("--hidden", type=int, default=DEFAULTS["hidden"], help="RNN hidden size")
    parser.add_argument("--num-layers", type=int, default=DEFAULTS["num_layers"], help="stacked RNN layers")
    parser.add_argument("--samples-per-language", type=int, default=DEFAULTS["samples_per_language"],
                        help="names sampled for each language after training")
    add_cell_argument(parser)


def load_data(data_path: Path | None, seed: int, args) -> data_names.NamesData:
    return data_names.load(data_path)


def build_model(data: data_names.NamesData, layers, args) -> NameGenerator:
    model = NameGenerator(data.languages, data.alphabet, layers, option(args, "embed"),
                          option(args, "language_embed"), option(args, "hidden"), option(args, "num_layers"),
                          option(args, "cell"))
    model.samples_per_language = option(args, "samples_per_language")
    return model


def encode_batch(data: data_names.NamesData, examples: list[tuple[str, int]]) -> tuple[torch.Tensor, ...]:
    """(inputs [B, T], targets [B, T], languages [B]): each name framed by the boundary token."""
    boundary = len(data.alphabet)
    encoded = [data.encode(name) for name, _ in examples]
    inputs, _ = data_names.pad_batch([[boundary] + chars for chars in encoded])
    targets, _ = data_names.pad_batch([chars + [boundary] for chars in encoded])
    return inputs, targets, torch.tensor([label for _, label in examples], dtype=torch.long)


def batches(data: data_names.NamesData, batch_size: int, generator: torch.Generator):
    order = data_names.shuffled_forever(len(data.train), generator)
    while True:
        yield encode_batch(data, [data.train[next(order)] for _ in range(batch_size)])


def loss(model: torch.nn.Module, batch: tuple, layers) -> torch.Tensor:
    inputs, targets, language = batch
    device = next(model.parameters()).device
    logits, _ = model(inputs.to(device), language.to(device))
    return layers.CrossEntropyLoss(ignore_index=0)(logits.reshape(-1, logits.shape[-1]), targets.to(device).reshape(-1))


def unigram_bits(data: data_names.NamesData) -> float:
    """Bits per character on the held-out names of a model that knows only the training character counts.

    Add-one smoothing, so a character seen only in held-out names costs a finite number of bits.
    """
    boundary = len(data.alphabet)
    counts = torch.ones(len(data.alphabet) + 1, dtype=torch.float64)
    counts[0] = 0  # padding is never a target
    for name, _ in data.train:
        for index in data.encode(name) + [boundary]:
            counts[index] += 1
    log_p = torch.log2(counts / counts.sum())
    held_out = [index for name, _ in data.val for index in data.encode(name) + [boundary]]
    return float(-log_p[held_out].mean()) if held_out else float("nan")


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: data_names.NamesData, device) -> dict:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data.val), EVAL_BATCH):
        inputs, targets, language = encode_batch(data, data.val[start: start + EVAL_BATCH])
        logits, _ = model(inputs.to(device), language.to(device))
        summed = ops.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                   targets.to(device).reshape(-1), ignore_index=0, reduction="sum")
        total += float(summed)
        count += int((targets != 0).sum())
    model.train(was_training)
    return {"bpc": total / max(count, 1) / math.log(2), "baseline": unigram_bits(data), "data": data.source}


@torch.no_grad()
def sample(model: NameGenerator, language: int, generator: torch.Generator, device) -> str:
    """One name in `language`, drawn character by character until the boundary token."""
    was_training = model.training
    model.eval()
    token = torch.tensor([[model.boundary]], device=device)
    language_index = torch.tensor([language], device=device)
    state, chars = None, []  # the layer's own state: h, or (h, c) for an LSTM
    for _ in range(MAX_NAME_LENGTH):
        logits, state = model(token, language_index, state)
        probabilities = torch.softmax(logits[0, -1].float(), dim=-1).cpu()
        probabilities[0] = 0  # padding is not a character
        index = int(torch.multinomial(probabilities, 1, generator=generator))
        if index == model.boundary:
            break
        chars.append(model.alphabet[index])
        token = torch.tensor([[index]], device=device)
    model.train(was_training)
    return "".join(chars)


def samples_by_language(model: NameGenerator, data: data_names.NamesData, per_language: int, device) -> dict:
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    return {language: [sample(model, label, generator, device) for _ in range(per_language)]
            for label, language in enumerate(data.languages)}


def artifacts(model: torch.nn.Module, data: data_names.NamesData, out_dir: Path, device, metrics: dict) -> dict:
    samples = samples_by_language(model, data, model.samples_per_language, device)
    lines = [f"{language:<12} {', '.join(names)}" for language, names in samples.items()]
    print("\n".join(lines))
    path = Path(out_dir) / "samples.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"samples": path.name}


def predict(model: torch.nn.Module, data: data_names.NamesData, text: str, device) -> list[str]:
    """`tritonprop predict namegen LANGUAGE`: a few sampled names in that language."""
    language = text.strip()
    if language not in data.languages:
        raise ValueError(f"predict namegen: unknown language {language!r}; the model knows {data.languages}")
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    return [sample(model, data.languages.index(language), generator, device)
            for _ in range(model.samples_per_language)]


TASK = Task(
    name="namegen",
    description="char RNN (or --cell lstm/gru) conditioned on language that samples new surnames (Faker's lists, "
                "or --data DIR)",
    load_data=load_data,
    build_model=build_model,
    batches=batches,
    loss=loss,
    evaluate=evaluate,
    default_steps=3000,
    default_batch_size=64,
    default_lr=3e-3,
    artifacts=artifacts,
    predict=predict,
    add_arguments=add_arguments,
    tags={"requires": ("faker",), "kind": "language_model", "smoke_args": ["--embed", "8", "--language-embed", "4", "--hidden", "8",
                                                   "--samples-per-language", "1"]},
)
