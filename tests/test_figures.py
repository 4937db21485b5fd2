"""docs/figures.py, the script that draws every picture of the docs, still runs, and the docs show
only pictures it draws.

The script runs once, in this process, with --tiny: the diagrams as they are (each checks its own
numbers against an independent computation while drawing) and the training runs at 2 steps on
tiny data.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import require_demo_packages

require_demo_packages()

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "figures.py"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PICTURE = re.compile(r"\]\(figures/([\w-]+)\.png\)")


def _load_script():
    spec = importlib.util.spec_from_file_location("docs_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figures():
    return _load_script()


@pytest.fixture(scope="module")
def drawn(figures, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, figures.main(["--tiny", "--out", str(out)])


def _expected(figures) -> set[str]:
    return {name for names in figures.OUTPUTS.values() for name in names}


def test_every_picture_is_drawn(figures, drawn):
    out, written = drawn
    assert sorted(path.name for path in written) == sorted(f"{name}.png" for name in _expected(figures))
    assert sorted(path.name for path in out.iterdir()) == sorted(path.name for path in written)


def test_pictures_are_valid_and_not_blank(drawn):
    _, written = drawn
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path.name
        with Image.open(path) as image:
            image.verify()  # a truncated or corrupt file raises here
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert min(pixels.shape) >= 100, f"{path.name}: {pixels.shape}"
        # Something is drawn: at least 1% of the pixels differ clearly from the background colour.
        background = np.median(pixels)
        assert (np.abs(pixels - background) > 30).mean() > 0.01, f"{path.name} looks blank"


def test_docs_show_only_pictures_the_script_draws(figures):
    shown = {name for doc in DOCS for name in PICTURE.findall(doc.read_text(encoding="utf-8"))}
    assert shown, "no doc shows a figures/*.png picture"
    assert shown <= _expected(figures), f"pictures no part of docs/figures.py draws: {sorted(shown - _expected(figures))}"


def test_committed_pictures_match_the_script(figures):
    """docs/figures/ holds exactly the pictures of the last full run: none missing, none left over."""
    committed = {path.stem for path in figures.FIGURES_DIR.glob("*.png")}
    assert committed == _expected(figures), (f"missing: {sorted(_expected(figures) - committed)}, "
                                             f"stale: {sorted(committed - _expected(figures))}; "
                                             "rerun python docs/figures.py")


def test_unknown_part_is_refused(figures, tmp_path, capsys):
    with pytest.raises(SystemExit):
        figures.main(["--only", "im2col,nonsense", "--out", str(tmp_path)])
    assert "nonsense" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
