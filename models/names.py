"""The name classifier: an RNN reads a surname one character at a time and names its language (many:1).

    embedding (torch)  ->  layers.RNN over the padded batch  ->  layers.Linear on each name's last state

`--cell lstm` or `--cell gru` takes `layers.LSTM` or `layers.GRU` instead of `layers.RNN` (default
rnn); the head reads the output sequence, which all three return alike.

Names have different lengths, so a batch is padded at the end. The RNN reads left to right, so
its output at a name's last character is the state after that name alone, whatever padding
follows; the head reads it there (a gather by length). That is the `h_n` that packing the batch
(`pack_padded_sequence`) would give, and unlike packing it compiles: torch.compile does not trace
torch.nn.utils.rnn's packing functions.

The loss is `layers.CrossEntropyLoss` on the head's logits (`--loss cross_entropy`, the default), or
with `--loss nll` the model ends in `layers.LogSoftmax` and trains with `layers.NLLLoss`: the same
loss and the same gradients in two ops instead of one fused op (docs/rnn_bptt.md says why).
Either way the largest output is the predicted language.

    tritonprop train names                      # Faker's surnames, 19 languages
    tritonprop train names --data DIR           # DIR/<Language>.txt, one name per line
    tritonprop train names --cell lstm          # or gru; rnn is the default
    tritonprop train names --loss nll           # LogSoftmax + NLLLoss instead of CrossEntropyLoss
    tritonprop predict names "Dostoevsky"       # top-3 languages with probabilities

The model records its languages, alphabet, cell and loss in its state_dict (`get_extra_state`), so a
checkpoint loaded against data with other classes fails with the class that differs rather than with
a shape mismatch, or worse, silently with the labels of another class list; one of another cell or
loss fails with both named. (`predict` rebuilds the model from the options saved in the checkpoint,
--cell and --loss among them.)
"""
from __future__ import annotations

from pathlib import Path

import torch

from tritonprop.models import data_names
from tritonprop.models.task import Task

DEFAULTS = dict(embed=32, hidden=128, num_layers=1, cell="rnn", loss="cross_entropy")
# --cell: the name of the recurrent layer in `layers` (tritonprop.ops or torch.nn).
CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# --loss: the name of the loss module in `layers`; nll also ends the model in layers.LogSoftmax.
LOSSES = {"cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss"}
EVAL_BATCH = 512
TOP_K = 3


def recurrent_layer(layers, cell: str):
    """layers.RNN, layers.LSTM or layers.GRU for --cell rnn, lstm or gru."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
    return getattr(layers, CELLS[cell])


class NameClassifier(torch.nn.Module):
    def __init__(self, languages, alphabet, layers, embed, hidden, num_layers, cell="rnn", loss="cross_entropy"):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.languages = list(languages)
        self.alphabet = list(alphabet)
        self.cell = cell
        self.loss = loss
        self.embedding = torch.nn.Embedding(len(alphabet), embed, padding_idx=0)
        self.rnn = recurrent_layer(layers, cell)(embed, hidden, num_layers=num_layers, batch_first=True)
        self.head = layers.Linear(hidden, len(languages))
        # --loss nll: the model outputs log-probabilities, which NLLLoss expects.
        self.log_softmax = layers.LogSoftmax(dim=-1) if loss == "nll" else None

    def forward(self, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores [B, classes] of padded character indices [B, T] with their lengths [B]: logits, or
        with --loss nll log-probabilities (the logits minus each row's log-sum-exp, the same argmax)."""
        output, _ = self.rnn(self.embedding(chars))
        # The top layer's state after each name's last character: output[b, lengths[b] - 1].
        last = (lengths.to(chars.device) - 1).reshape(-1, 1, 1).expand(-1, 1, output.shape[-1])
        logits = self.head(output.gather(1, last).squeeze(1))
        return logits if self.log_softmax is None else self.log_softmax(logits)

    def get_extra_state(self):
        return {"languages": self.languages, "alphabet": self.alphabet, "cell": self.cell, "loss": self.loss}

    def set_extra_state(self, state):
        check_same_cell(state, self.cell)
        check_same_loss(state, self.loss)
        check_same_vocabulary("languages", state["languages"], self.languages)
        check_same_vocabulary("alphabet", state["alphabet"], self.alphabet)


def check_same_cell(state: dict, cell: str) -> None:
    """A checkpoint of one cell does not load into another (checkpoints from before --cell are rnn)."""
    saved = state.get("cell", "rnn")
    if saved != cell:
        raise ValueError(f"the checkpoint is of a {saved} model, this model is {cell}: build it with --cell {saved}")


def check_same_loss(state: dict, loss: str) -> None:
    """A checkpoint trained with one loss reloads with that loss (checkpoints from before --loss are cross_entropy):
    the model's output (logits or log-probabilities) and its training loss depend on it."""
    saved = state.get("loss", "cross_entropy")
    if saved != loss:
        raise ValueError(f"the checkpoint was trained with --loss {saved}, this model with --loss {loss}: "
                         f"build it with --loss {saved}")


def check_same_vocabulary(what: str, saved: list, current: list) -> None:
    """A checkpoint only fits the data it was trained with: name what differs."""
    if list(saved) == list(current):
        return
    unknown = sorted(set(current) - set(saved))
    missing = sorted(set(saved) - set(current))
    raise ValueError(f"the checkpoint was trained with other {what}: the data has {unknown or 'none'} that the "
                     f"checkpoint does not know and lacks {missing or 'none'} that it has"
                     + ("" if unknown or missing else " (same set, different order)"))


def option(args, name: str):
    return getattr(args, name, DEFAULTS[name]) if args is not None else DEFAULTS[name]


def add_arguments(parser) -> None:
    parser.add_argument("--embed", type=int, default=DEFAULTS["embed"], help="character embedding width")
    parser.add_argument("--hidden", type=int, default=DEFAULTS["hidden"], help="RNN hidden size")
    parser.add_argument("--num-layers", type=int, default=DEFAULTS["num_layers"], help="stacked RNN layers")
    add_cell_argument(parser)
    parser.add_argument("--loss", choices=tuple(LOSSES), default=DEFAULTS["loss"],
                        help="cross_entropy: CrossEntropyLoss on the logits (one fused op); nll: the model ends in "
                             "LogSoftmax and trains with NLLLoss (the same loss and gradients, in two ops)")


def add_cell_argument(parser) -> None:
    parser.add_argument("--cell", choices=tuple(CELLS), default=DEFAULTS["cell"],
                        help="the recurrent layer: RNN (tanh), LSTM or GRU")


def load_data(data_path: Path | None, seed: int, args) -> data_names.NamesData:
    # The split is a hash of each name, the same for every seed.
    return data_names.load(data_path)


def build_model(data: data_names.NamesData, layers, args) -> NameClassifier:
    return NameClassifier(data.languages, data.alphabet, layers, option(args, "embed"), option(args, "hidden"),
                          option(args, "num_layers"), option(args, "cell"), option(args, "loss"))


def encode_batch(data: data_names.NamesData, examples: list[tuple[str, int]]) -> tuple[torch.Tensor, ...]:
    chars, lengths = data_names.pad_batch([data.encode(name) for name, _ in examples])
    return chars, lengths, torch.tensor([label for _, label in examples], dtype=torch.long)


def batches(data: data_names.NamesData, batch_size: int, generator: torch.Generator):
    order = data_names.shuffled_forever(len(data.train), generator)
    while True:
        yield encode_batch(data, [data.train[next(order)] for _ in range(batch_size)])


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _classifier(model: torch.nn.Module) -> NameClassifier:
    """The NameClassifier itself, also inside the loop's wrappers (DistributedDataParallel, torch.compile)."""
    return next(module for module in model.modules() if isinstance(module, NameClassifier))


def loss(model: torch.nn.Module, batch: tuple, layers) -> torch.Tensor:
    chars, lengths, labels = batch
    device = _device_of(model)
    scores = model(chars.to(device), lengths)
    # cross_entropy(logits, y) = nll_loss(log_softmax(logits), y): --loss nll's model applied the log_softmax.
    criterion = getattr(layers, LOSSES[_classifier(model).loss])()
    return criterion(scores, labels.to(device))


@torch.no_grad()
def predictions(model: torch.nn.Module, data: data_names.NamesData, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, true class) of every held-out name."""
    was_training = model.training
    model.eval()
    predicted, labels = [], []
    for start in range(0, len(data.val), EVAL_BATCH):
        chars, lengths, y = encode_batch(data, data.val[start: start + EVAL_BATCH])
        predicted.append(model(chars.to(device), lengths).argmax(-1).cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(predicted), torch.cat(labels)


def majority_baseline(data: data_names.NamesData) -> float:
    """Held-out accuracy of always answering the most common training language."""
    counts = torch.bincount(torch.tensor([label for _, label in data.train]), minlength=len(data.languages))
    majority = int(counts.argmax())
    return sum(label == majority for _, label in data.val) / max(len(data.val), 1)


def evaluate(model: torch.nn.Module, data: data_names.NamesData, device) -> dict:
    predicted, labels = predictions(model, data, device)
    return {
        "accuracy": float((predicted == labels).float().mean()) if len(labels) else float("nan"),
        "baseline": majority_baseline(data),
        "classes": len(data.languages),
        "train_names": len(data.train),
        "val_names": len(data.val),
        "data": data.source,
    }


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    return torch.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def artifacts(model: torch.nn.Module, data: data_names.NamesData, out_dir: Path, device, metrics: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicted, labels = predictions(model, data, device)
    counts = confusion_matrix(predicted, labels, len(data.languages)).float()
    # Each row normalised by its class size, so small languages are as visible as large ones.
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = 0.4 * len(data.languages) + 2
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(data.languages)), data.languages, rotation=90)
    axes.set_yticks(range(len(data.languages)), data.languages)
    axes.set_xlabel("predicted language")
    axes.set_ylabel("true language")
    axes.set_title(f"held-out names: accuracy {metrics.get('accuracy', float('nan')):.1%}, "
                   f"majority baseline {metrics.get('baseline', float('nan')):.1%}")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    path = Path(out_dir) / "confusion_matrix.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return {"confusion_matrix": path.name}


@torch.no_grad()
def predict(model: torch.nn.Module, data: data_names.NamesData, text: str, device) -> list[str]:
    name = text.strip()
    if not name:
        raise ValueError("predict names: the name is empty")
    was_training = model.training
    model.eval()
    chars, lengths = data_names.pad_batch([data.encode(name)])
    # Logits or, with --loss nll, log-probabilities log p: softmax(log p) = p, since the p sum to 1.
    probabilities = torch.softmax(model(chars.to(device), lengths).float(), dim=-1)[0].cpu()
    model.train(was_training)
    top = probabilities.topk(min(TOP_K, len(data.languages)))
    return [f"{data.languages[i]:<12} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist())]


TASK = Task(
    name="names",
    description="RNN (or --cell lstm/gru) name classifier: surname -> language (Faker's surname lists, or --data DIR "
                "of <Language>.txt)",
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
    tags={"requires": ("faker",), "kind": "classifier", "smoke_args": ["--embed", "8", "--hidden", "8"]},
)

