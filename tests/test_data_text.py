"""The char LM's text: the pydoc topics corpus, and --data file.txt with its errors."""
from __future__ import annotations

import pytest
import torch

from tritonprop.models import data_text
from tritonprop.models.data_text import TextDataError


def test_pydoc_corpus_is_deterministic_and_split():
    first, second = data_text.load(None, context=64), data_text.load(None, context=64)
    assert torch.equal(first.train, second.train) and torch.equal(first.val, second.val)
    total = len(first.train) + len(first.val)
    assert total > 100_000
    assert len(first.val) == total - int(total * 0.9)
    assert first.decode(first.train[:10]) == data_text.pydoc_topics()[:10]


def test_text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcab" * 10, encoding="utf-8")
    data = data_text.load(path, context=4)
    assert data.alphabet == ["a", "b", "c"]
    assert data.decode(torch.cat([data.train, data.val])) == "abcab" * 10
    assert data.encode("cab").tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match=r"\['z'\]"):
        data.encode("zab")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TextDataError, match="nothing.txt: no such file"):
        data_text.load(tmp_path / "nothing.txt", context=4)


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text(" \n", encoding="utf-8")
    with pytest.raises(TextDataError, match="empty.txt: empty file"):
        data_text.load(path, context=4)


def test_bad_encoding_is_named(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 20)
    with pytest.raises(TextDataError, match="latin.txt: not UTF-8"):
        data_text.load(path, context=4)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(TextDataError, match="not a file"):
        data_text.load(tmp_path, context=4)


def test_text_shorter_than_two_windows_is_named(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 3, encoding="utf-8")
    with pytest.raises(TextDataError, match="short.txt: 30 characters is too short"):
        data_text.load(path, context=8)
