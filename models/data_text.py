"""Text for the char language model: the Python standard library's pydoc topics, or a UTF-8 file.

The default corpus ships with every Python: ``pydoc_data.topics.topics``, the help text that
``help("for")`` prints, about 465,000 characters of English prose and code. The topics are
joined in key order, so the corpus is the same on every run. The last tenth is held out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

HELD_OUT_FRACTION = 0.1


class TextDataError(ValueError):
    """Bad --data for the char LM; the message names the file."""


@dataclass
class TextData:
    alphabet: list[str]      # token index -> character
    train: torch.Tensor      # int64 token indices
    val: torch.Tensor
    source: str
    context: int             # characters per training window

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.alphabet)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            raise ValueError(f"{text!r} has characters that are not in the corpus: {unknown}")
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, tokens) -> str:
        return "".join(self.alphabet[int(t)] for t in tokens)


def pydoc_topics() -> str:
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def read_text_file(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise TextDataError(f"{path}: no such file")
    if not path.is_file():
        raise TextDataError(f"{path}: not a file; --data for charlm is one UTF-8 text file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TextDataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    if not text.strip():
        raise TextDataError(f"{path}: empty file")
    return text


def build(text: str, source: str, context: int) -> TextData:
    """Split at the last tenth; the alphabet is every character of the corpus, in code-point order.

    Each split must hold at least one window of `context` characters and its next character.
    """
    split = int(len(text) * (1 - HELD_OUT_FRACTION))
    min_length = context + 1
    if len(text) - split < min_length or split < min_length:
        raise TextDataError(f"{source}: {len(text)} characters is too short; each split needs at least "
                            f"{min_length} characters (the context length + 1) with one tenth held out")
    alphabet = sorted(set(text))
    index = {c: i for i, c in enumerate(alphabet)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.long)
    return TextData(alphabet=alphabet, train=tokens[:split], val=tokens[split:], source=source, context=context)


def load(data_path: Path | None, context: int) -> TextData:
    if data_path is None:
        return build(pydoc_topics(), "pydoc_data.topics", context)
    return build(read_text_file(data_path), str(data_path), context)
