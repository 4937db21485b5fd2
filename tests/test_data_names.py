"""The surname data: Faker's lists and the tutorial's <Language>.txt directories, with their errors."""
from __future__ import annotations

import pytest

from tritonprop.models import data_names
from tritonprop.models.data_names import NamesDataError
from helpers import require_demo_packages

require_demo_packages()


def write(directory, files: dict):
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return directory


def test_faker_names_cover_at_least_15_languages_one_locale_each():
    data = data_names.load(None)
    assert len(data.languages) >= 15
    assert len(set(data_names.FAKER_LOCALES.values())) == len(data_names.FAKER_LOCALES)
    per_language = {label: 0 for label in range(len(data.languages))}
    for _, label in data.train:
        per_language[label] += 1
    assert min(per_language.values()) > 30, per_language


def test_faker_names_under_two_languages_are_dropped_and_split_is_disjoint():
    surnames = data_names.faker_surnames()
    shared = {name for a in surnames for b in surnames if a < b for name in set(surnames[a]) & set(surnames[b])}
    assert shared, "the Faker lists share some surnames; this test needs one"
    data = data_names.load(None)
    kept = [name for name, _ in data.train + data.val]
    assert not shared & set(kept)
    assert len(kept) == len(set(kept))
    assert not {name for name, _ in data.train} & {name for name, _ in data.val}
    assert 0.05 < len(data.val) / len(kept) < 0.15


def test_split_is_deterministic_and_depends_only_on_the_name():
    first, second = data_names.load(None), data_names.load(None)
    assert first.train == second.train and first.val == second.val and first.alphabet == second.alphabet
    # Removing other names does not move a name between splits.
    small = data_names.build({"A": [name for name, _ in first.val[:3] + first.train[:3]]}, "subset")
    assert [name for name, _ in small.val] == [name for name, _ in first.val[:3]]


def test_alphabet_comes_from_the_data():
    data = data_names.build({"German": ["Müller", "Weber"], "Czech": ["Dvořák"]}, "test")
    assert data.alphabet[0] == data_names.PAD
    assert set(data.alphabet[1:]) == set("MüllerWeberDvořák")
    assert data.encode("Weber") == [data.char_index[c] for c in "Weber"]
    with pytest.raises(ValueError, match=r"\['x'\]"):
        data.encode("Wex")


def test_tutorial_directory_format(tmp_path):
    write(tmp_path, {"Italian.txt": "Rossi\nRusso\n\n", "German.txt": "Müller\nRossi\nWeber\n", "notes.md": "ignored"})
    data = data_names.load(tmp_path)
    assert data.languages == ["German", "Italian"]
    names = {name for name, _ in data.train + data.val}
    assert names == {"Russo", "Müller", "Weber"}  # Rossi is under two languages
    assert data.source == str(tmp_path)


def test_empty_file_is_named(tmp_path):
    write(tmp_path, {"Italian.txt": "Rossi\n", "German.txt": "\n  \n"})
    with pytest.raises(NamesDataError, match="German.txt: empty file"):
        data_names.load(tmp_path)


def test_bad_encoding_is_named(tmp_path):
    write(tmp_path, {"Italian.txt": "Rossi\n", "German.txt": "M\xfcller\n".encode("latin-1")})
    with pytest.raises(NamesDataError, match="German.txt: not UTF-8"):
        data_names.load(tmp_path)


def test_unknown_class_file_name_is_named(tmp_path):
    write(tmp_path, {"Italian.txt": "Rossi\n", "1.txt": "Weber\n"})
    with pytest.raises(NamesDataError, match=r"1\.txt: '1' is not a class name"):
        data_names.load(tmp_path)


def test_directory_without_class_files(tmp_path):
    write(tmp_path, {"names.csv": "Rossi,Italian\n"})
    with pytest.raises(NamesDataError, match="no <Language>.txt files"):
        data_names.load(tmp_path)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(NamesDataError, match="nowhere: not a directory"):
        data_names.load(tmp_path / "nowhere")


def test_pad_batch():
    padded, lengths = data_names.pad_batch([[3, 4, 5], [6]])
    assert padded.tolist() == [[3, 4, 5], [6, 0, 0]]
    assert lengths.tolist() == [3, 1]
