"""A two-layer perceptron trained on scikit-learn's 8x8 digits with the numpy autodiff engine.

This module is the one exception to the rule that models are built on ``tritonprop.ops``: it
exists to show that ``ops/reference/autodiff.py`` alone, numpy and nothing else, is enough to
train a network. No torch anywhere. The pieces are named after their torch counterparts
(``Linear``, ``SGD.step``, ``SGD.zero_grad``, ``cross_entropy``), so the loop reads like the
torch loop it mirrors. Run it with ``tritonprop train mlp-numpy``.

The data: 1797 grayscale digits of 8x8 pixels with values 0..16, shipped inside scikit-learn
(``sklearn.datasets.load_digits``; nothing is downloaded).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tritonprop.ops.reference.autodiff import Tensor, no_grad

NUM_CLASSES = 10
PIXEL_MAX = 16.0
HELD_OUT_FRACTION = 0.2
# The split has its own seed so that every training seed is scored on the same held-out digits.
SPLIT_SEED = 0


@dataclass
class Config:
    epochs: int = 30
    hidden: int = 128
    lr: float = 0.5
    batch_size: int = 32
    seed: int = 0


@dataclass
class Result:
    losses: list  # mean training loss of each epoch
    held_out_accuracy: float
    seconds: float


def load_digits():
    """Returns ``(x, y)``: x of shape (1797, 64), float64 scaled to [0, 1]; y the labels 0..9."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:
        raise ImportError("the digits data ships with scikit-learn: pip install scikit-learn") from error
    x, y = sklearn_load_digits(return_X_y=True)
    return x.astype(np.float64) / PIXEL_MAX, y.astype(np.intp)


def stratified_split(y: np.ndarray, held_out_fraction: float, seed: int):
    """Train and held-out indices, with each digit in the same proportion in both."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(len(members) * held_out_fraction))
        held_out.append(members[:cut])
        train.append(members[cut:])
    return np.concatenate(train), np.concatenate(held_out)


class Linear:
    """``y = x @ W.T + b`` with torch.nn.Linear's layout and initialisation: U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator):
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Tensor(rng.uniform(-bound, bound, (out_features, in_features)), requires_grad=True)
        self.bias = Tensor(rng.uniform(-bound, bound, out_features), requires_grad=True)

    def __call__(self, x: Tensor) -> Tensor:
        return x @ self.weight.T + self.bias

    def parameters(self) -> list:
        return [self.weight, self.bias]


class MLP:
    def __init__(self, in_features: int, hidden: int, classes: int, rng: np.random.Generator):
        self.hidden = Linear(in_features, hidden, rng)
        self.out = Linear(hidden, classes, rng)

    def __call__(self, x: Tensor) -> Tensor:
        return self.out(self.hidden(x).relu())

    def parameters(self) -> list:
        return self.hidden.parameters() + self.out.parameters()


def cross_entropy(logits: Tensor, labels: np.ndarray) -> Tensor:
    """Mean negative log-likelihood of the right class: torch.nn.functional.cross_entropy.

    Picking one log-probability per row is integer-array indexing; its backward scatters the
    gradient into exactly those positions.
    """
    log_probs = logits.log_softmax(axis=-1)
    return -log_probs[np.arange(len(labels)), labels].mean()


class SGD:
    """Plain stochastic gradient descent: p <- p - lr * dL/dp."""

    def __init__(self, parameters: list, lr: float):
        self.parameters = parameters
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad = None

    def step(self) -> None:
        for p in self.parameters:
            # Updating .data in place is the numpy twin of torch's `with torch.no_grad(): p -= lr * p.grad`.
            p.data -= self.lr * p.grad


def accuracy(model: MLP, x: np.ndarray, y: np.ndarray) -> float:
    with no_grad():
        predictions = model(Tensor(x)).data.argmax(axis=1)
    return float((predictions == y).mean())


def train(config: Config | None = None, log=print) -> Result:
    """Trains from scratch and returns the loss of every epoch and the held-out accuracy.

    ``config`` defaults to ``Config()``; ``log`` receives one line per epoch (``None`` for silence).
    """
    config = config or Config()
    start = time.perf_counter()
    x, y = load_digits()
    train_idx, held_out_idx = stratified_split(y, HELD_OUT_FRACTION, SPLIT_SEED)
    x_train, y_train = x[train_idx], y[train_idx]

    rng = np.random.default_rng(config.seed)
    model = MLP(x.shape[1], config.hidden, NUM_CLASSES, rng)
    optimizer = SGD(model.parameters(), config.lr)

    losses = []
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(len(x_train))
        total, seen = 0.0, 0
        for first in range(0, len(order), config.batch_size):
            batch = order[first:first + config.batch_size]
            loss = cross_entropy(model(Tensor(x_train[batch])), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        losses.append(total / seen)
        if log:
            log(f"epoch {epoch:3d}  train loss {losses[-1]:.4f}")

    held_out = accuracy(model, x[held_out_idx], y[held_out_idx])
    seconds = time.perf_counter() - start
    if log:
        log(f"held-out accuracy {held_out:.4f} ({len(held_out_idx)} digits, {seconds:.1f} s)")
    return Result(losses, held_out, seconds)
