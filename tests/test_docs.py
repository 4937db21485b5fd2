"""The docs point at kernel lines as `path:line` — `code`; each pointer must still hold that code."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POINTER = re.compile(r"`((?:kernels|ops)/[\w/]+\.py):(\d+)` — `([^`]+)`")
DOCS = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_line_pointers_match_the_code(doc):
    pointers = POINTER.findall(doc.read_text())
    for path, line, code in pointers:
        lines = (ROOT / path).read_text().splitlines()
        assert int(line) <= len(lines), f"{doc.name}: {path}:{line} is past the end of the file"
        assert lines[int(line) - 1].strip() == code.strip(), (
            f"{doc.name}: {path}:{line} now reads {lines[int(line) - 1].strip()!r}, not {code!r}"
        )


def test_batchnorm_doc_points_at_every_backward_term():
    pointers = POINTER.findall((ROOT / "docs" / "batchnorm.md").read_text())
    assert len(pointers) >= 15
