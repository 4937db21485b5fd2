"""Surnames labelled by language, for the name classifier (`names`) and the name generator (`namegen`).

Two sources:

- **Faker's surname lists** (the default; Faker is MIT-licensed and ships them as package data).
  One locale per language, 19 languages, all written in the Latin alphabet so that the model has to
  learn spelling patterns rather than read the script (a Cyrillic or Greek name would give its
  language away in one character). Faker's lists are tuples, or OrderedDicts of name -> weight.
- **The PyTorch tutorial's format** (`--data DIR`): one ``<Language>.txt`` per class, one name per
  line, UTF-8. The class is the file's stem.

Either way, a name that appears under two languages is dropped from both (it cannot be classified),
duplicates inside a language are kept once, and the held-out split is a hash of the name: the
same name is in the same split whatever the seed, the file order or the set of other names.
"""
from __future__ import annotations

import importlib
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

# Language -> the Faker locale whose `last_names` stand for it.
FAKER_LOCALES = {
    "Croatian": "hr_HR",
    "Czech": "cs_CZ",
    "Danish": "da_DK",
    "Dutch": "nl_NL",
    "English": "en_US",
    "Estonian": "et_EE",
    "Finnish": "fi_FI",
    "French": "fr_FR",
    "German": "de_DE",
    "Hungarian": "hu_HU",
    "Irish": "ga_IE",
    "Italian": "it_IT",
    "Latvian": "lv_LV",
    "Norwegian": "no_NO",
    "Portuguese": "pt_PT",
    "Slovak": "sk_SK",
    "Spanish": "es_ES",
    "Swedish": "sv_SE",
    "Turkish": "tr_TR",
}

# One name in ten is held out.
HELD_OUT_BUCKETS = 10
# A class name, as the file stem of `<Language>.txt`: a letter, then letters, digits, spaces, '_' or '-'.
CLASS_NAME = re.compile(r"^[^\W\d_][\w\- ]*$")
# Index 0 of the alphabet is padding, so that a padded batch never aliases a real character.
PAD = "\0"


class NamesDataError(ValueError):
    """Bad --data for the names tasks; the message names the file."""


@dataclass
class NamesData:
    languages: list[str]             # class index -> language
    alphabet: list[str]              # token index -> character; index 0 is padding
    train: list[tuple[str, int]]     # (name, class index)
    val: list[tuple[str, int]]
    source: str                      # where the names came from, for metrics.json

    @property
    def char_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.alphabet)}

    def encode(self, name: str) -> list[int]:
        """Token indices of `name`; a character the training data never had is a clear error."""
        index = self.char_index
        unknown = sorted({c for c in name if c not in index})
        if unknown:
            raise ValueError(f"{name!r} has characters the model was not trained on: {unknown}")
        return [index[c] for c in name]


def is_held_out(name: str) -> bool:
    return zlib.crc32(name.encode("utf-8")) % HELD_OUT_BUCKETS == 0


def faker_surnames() -> dict[str, list[str]]:
    """language -> Faker's surnames of its locale, in Faker's order."""
    surnames = {}
    for language, locale in FAKER_LOCALES.items():
        module = importlib.import_module(f"faker.providers.person.{locale}")
        surnames[language] = [str(name) for name in module.Provider.last_names]
    return surnames


def read_names_dir(directory: Path) -> dict[str, list[str]]:
    """language -> names from a directory of ``<Language>.txt`` files (the PyTorch tutorial's format)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NamesDataError(f"{directory}: not a directory; --data for the names tasks is a directory of "
                             "<Language>.txt files, one name per line")
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise NamesDataError(f"{directory}: no <Language>.txt files in this directory")
    surnames = {}
    for path in files:
        if not CLASS_NAME.match(path.stem):
            raise NamesDataError(f"{path}: {path.stem!r} is not a class name; name the file after its "
                                 "language, e.g. Italian.txt")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise NamesDataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            raise NamesDataError(f"{path}: empty file; each <Language>.txt needs at least one name")
        surnames[path.stem] = names
    return surnames


def build(surnames: dict[str, list[str]], source: str) -> NamesData:
    """Drop names listed under two languages, split by hash, derive the alphabet from the data."""
    languages = sorted(surnames)
    unique = {language: list(dict.fromkeys(names)) for language, names in surnames.items()}
    seen_under = Counter(name for names in unique.values() for name in names)
    train, val = [], []
    for label, language in enumerate(languages):
        for name in unique[language]:
            if seen_under[name] == 1:
                (val if is_held_out(name) else train).append((name, label))
    if not train:
        raise NamesDataError(f"{source}: no names left for training after dropping names shared by languages")
    alphabet = [PAD] + sorted({c for name, _ in train + val for c in name})
    return NamesData(languages=languages, alphabet=alphabet, train=train, val=val, source=source)


def load(data_path: Path | None) -> NamesData:
    if data_path is None:
        return build(faker_surnames(), "faker")
    return build(read_names_dir(data_path), str(data_path))


def pad_batch(sequences: list[list[int]], pad_value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded LongTensor [B, T], lengths LongTensor [B]) of a list of token lists."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    padded = torch.full((len(sequences), int(lengths.max()) if sequences else 0), pad_value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded, lengths


def shuffled_forever(count: int, generator: torch.Generator):
    """Indices 0..count-1 in a fresh random order each epoch, forever, drawn from `generator`."""
    while True:
        yield from torch.randperm(count, generator=generator).tolist()
