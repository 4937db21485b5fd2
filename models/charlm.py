"""The char language model: a decoder-only Transformer that predicts the next character.

    characters -> embeddings (torch) -> causal SelfAttentionBlocks (models/transformer.py) -> layers.Linear

Training windows are random slices of `--context` characters from the training text; the target is
the same slice shifted by one. Evaluation is bits per character on the held-out tenth, in
non-overlapping windows, next to a unigram baseline: the bits per character of a model that knows
only how often each character occurs in the training text (add-one smoothed), on the same
held-out characters.

    tritonprop train charlm                         # pydoc_data topics, shipped with Python
    tritonprop train charlm --data file.txt
    tritonprop predict charlm "def "                # continue a prompt
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from tritonprop import ops
from tritonprop.models import data_text
from tritonprop.models.names import check_same_vocabulary
from tritonprop.models.task import Task
from tritonprop.models.transformer import DecoderOnly

DEFAULTS = dict(d_model=128, heads=4, d_ff=512, num_layers=4, context=128, dropout=0.1, eval_windows=200,
                sample_length=300)
EVAL_BATCH = 32
# The sampling stream is seeded on its own, so samples do not depend on how long training ran.
SAMPLE_SEED = 0
PROMPT_LENGTH = 32


def option(args, name: str):
    return getattr(args, name, DEFAULTS[name]) if args is not None else DEFAULTS[name]


def add_arguments(parser) -> None:
    parser.add_argument("--d-model", type=int, default=DEFAULTS["d_model"], help="Transformer width")
    parser.add_argument("--heads", type=int, default=DEFAULTS["heads"], help="attention heads")
    parser.add_argument("--d-ff", type=int, default=DEFAULTS["d_ff"], help="feed-forward width")
    parser.add_argument("--num-layers", type=int, default=DEFAULTS["num_layers"], help="Transformer blocks")
    parser.add_argument("--context", type=int, default=DEFAULTS["context"], help="characters per training window")
    parser.add_argument("--dropout", type=float, default=DEFAULTS["dropout"])
    parser.add_argument("--eval-windows", type=int, default=DEFAULTS["eval_windows"],
                        help="held-out windows scored for bits per char (0: all of them)")
    parser.add_argument("--sample-length", type=int, default=DEFAULTS["sample_length"],
                        help="characters sampled after training")


class CharLM(torch.nn.Module):
    def __init__(self, data: data_text.TextData, layers, args):
        super().__init__()
        self.alphabet = list(data.alphabet)
        self.context = option(args, "context")
        self.eval_windows = option(args, "eval_windows")
        self.sample_length = option(args, "sample_length")
        self.transformer = DecoderOnly(len(data.alphabet), d_model=option(args, "d_model"), heads=option(args, "heads"),
                                       d_ff=option(args, "d_ff"), num_layers=option(args, "num_layers"),
                                       max_length=self.context, dropout=option(args, "dropout"), layers=layers)

    def forward(self, tokens):
        return self.transformer(tokens)

    def get_extra_state(self):
        return {"alphabet": self.alphabet}

    def set_extra_state(self, state):
        check_same_vocabulary("characters", state["alphabet"], self.alphabet)


def load_data(data_path: Path | None, seed: int, args) -> data_text.TextData:
    return data_text.load(data_path, context=option(args, "context"))


def build_model(data: data_text.TextData, layers, args) -> CharLM:
    return CharLM(data, layers, args)


def batches(data: data_text.TextData, batch_size: int, generator: torch.Generator):
    context = data.context
    while True:
        starts = torch.randint(0, len(data.train) - context, (batch_size,), generator=generator)
        windows = torch.stack([data.train[s: s + context + 1] for s in starts.tolist()])
        yield windows[:, :-1], windows[:, 1:]


def loss(model: torch.nn.Module, batch: tuple, layers) -> torch.Tensor:
    inputs, targets = (t.to(next(model.parameters()).device) for t in batch)
    logits = model(inputs)
    return layers.CrossEntropyLoss()(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def held_out_windows(data: data_text.TextData, context: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of consecutive non-overlapping held-out windows; the first `limit` (0: all)."""
    count = (len(data.val) - 1) // context
    if limit:
        count = min(count, limit)
    windows = torch.stack([data.val[i * context: i * context + context + 1] for i in range(count)])
    return windows[:, :-1], windows[:, 1:]


def unigram_bits(data: data_text.TextData, targets: torch.Tensor) -> float:
    counts = torch.bincount(data.train, minlength=len(data.alphabet)).double() + 1
    return float(-torch.log2(counts / counts.sum())[targets.reshape(-1)].mean())


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: data_text.TextData, device) -> dict:
    inputs, targets = held_out_windows(data, model.context, model.eval_windows)
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(inputs), EVAL_BATCH):
        logits = model(inputs[start: start + EVAL_BATCH].to(device)).float()
        total += float(ops.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                         targets[start: start + EVAL_BATCH].to(device).reshape(-1),
                                         reduction="sum"))
    model.train(was_training)
    return {"bpc": total / targets.numel() / math.log(2), "baseline": unigram_bits(data, targets),
            "eval_chars": targets.numel(), "data": data.source}


@torch.no_grad()
def sample(model: CharLM, data: data_text.TextData, prompt: str, length: int, device) -> str:
    """`prompt` continued by `length` characters drawn one at a time (temperature 1)."""
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    tokens = data.encode(prompt).to(device)
    was_training = model.training
    model.eval()
    for _ in range(length):
        logits = model(tokens[-model.context:][None])[0, -1].float()
        next_token = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).to(device)
        tokens = torch.cat([tokens, next_token])
    model.train(was_training)
    return data.decode(tokens.cpu())


def artifacts(model: torch.nn.Module, data: data_text.TextData, out_dir: Path, device, metrics: dict) -> dict:
    prompt = data.decode(data.val[:PROMPT_LENGTH])
    text = sample(model, data, prompt, model.sample_length, device)
    print(f"sample (prompt: the first {PROMPT_LENGTH} held-out characters):\n{text}")
    path = Path(out_dir) / "samples.txt"
    path.write_text(text + "\n", encoding="utf-8")
    return {"samples": path.name}


def predict(model: torch.nn.Module, data: data_text.TextData, text: str, device) -> list[str]:
    if not text:
        raise ValueError("predict charlm: the prompt is empty")
    return [sample(model, data, text, model.sample_length, device)]


TASK = Task(
    name="charlm",
    description="decoder-only Transformer char LM (the stdlib's pydoc_data topics, or --data file.txt)",
    load_data=load_data,
    build_model=build_model,
    batches=batches,
    loss=loss,
    evaluate=evaluate,
    default_steps=3000,
    default_batch_size=64,
    default_lr=1e-3,
    artifacts=artifacts,
    predict=predict,
    add_arguments=add_arguments,
    # An epoch is as many windows as the training text holds without overlap.
    epoch_size=lambda data: len(data.train) // data.context,
    tags={"kind": "language_model", "smoke_args": ["--d-model", "8", "--heads", "2", "--d-ff", "16", "--num-layers",
                                                   "1", "--context", "8", "--eval-windows", "2",
                                                   "--sample-length", "5"]},
)
