"""The docs are checked against the code they describe.

- A doc points at a line as `path:line` — `code`: the line must still hold that code, and it must
  lie inside the function the surrounding text is about. That function is the last one the
  section names in backticks before the pointer, and the line must be in it or in a function it
  reaches through calls or references (a launch function reaches its kernels, a kernel its
  helpers). A pointer that drifts into a twin kernel (the depthwise dgrad instead of the GEMM
  dgrad) therefore fails, although its text still matches.
- Every ```python block of a doc runs as written: the blocks of one doc in order, in one
  namespace, like a doctest session (under the Triton interpreter on a CPU).
- Every relative link and picture of a doc (and of the README) exists.
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POINTER = re.compile(r"`((?:kernels|ops|models)/[\w/]+\.py):(\d+)` — `([^`]+)`")
NAMED = re.compile(r"`([A-Za-z_]\w*)(?:\(\))?`")
HEADING = re.compile(r"^#+ ", re.MULTILINE)
# A markdown link or picture: [text](target) or ![alt](target).
LINK = re.compile(r"\]\(([^)\s]+)\)")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOCS = sorted((ROOT / "docs").glob("*.md"))
# The packages a pointer may point into, as import names (setup.py's package_dir mapping).
PACKAGES = {"tritonprop.kernels": "kernels", "tritonprop.ops": "ops", "tritonprop.models": "models"}


def _module_path(module: str) -> str | None:
    """`tritonprop.ops.reference.conv2d` -> `ops/reference/conv2d.py`, if that file exists."""
    for package, folder in PACKAGES.items():
        if module == package or module.startswith(package + "."):
            relative = folder + module[len(package):].replace(".", "/")
            if (ROOT / (relative + ".py")).is_file():
                return relative + ".py"
    return None


class SourceFile:
    """One source file's definitions (functions, kernels, classes) and what each one refers to."""

    def __init__(self, path: str):
        self.path = path
        tree = ast.parse((ROOT / path).read_text())
        self.definitions = [node for node in ast.walk(tree)
                            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        self.names = {node.name for node in self.definitions}
        # Imported names: a function (`from ...activations import apply_activation`) or a module
        # (`from tritonprop.kernels import conv2d as K`).
        self.imported_functions: dict[str, tuple[str, str]] = {}
        self.imported_modules: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    local = alias.asname or alias.name
                    module_file = _module_path(f"{node.module}.{alias.name}")
                    if module_file:
                        self.imported_modules[local] = module_file
                    elif (source := _module_path(node.module)):
                        self.imported_functions[local] = (source, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and (module_file := _module_path(alias.name)):
                        self.imported_modules[alias.asname] = module_file

    def enclosing(self, line: int) -> list[str]:
        """The definitions whose source (decorators included) contains the line, outermost first."""
        def start(node):
            return min([node.lineno] + [d.lineno for d in node.decorator_list])
        return [node.name for node in sorted(self.definitions, key=start)
                if start(node) <= line <= node.end_lineno]

    def references(self, name: str) -> set[tuple[str, str]]:
        """(file, name) of every function that the definitions called `name` mention."""
        found = set()
        for node in self.definitions:
            if node.name != name:
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name):
                    if inner.id in self.names:
                        found.add((self.path, inner.id))
                    elif inner.id in self.imported_functions:
                        found.add(self.imported_functions[inner.id])
                elif (isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name)
                      and inner.value.id in self.imported_modules):
                    found.add((self.imported_modules[inner.value.id], inner.attr))
        return found


@functools.lru_cache(maxsize=None)
def source(path: str) -> SourceFile:
    return SourceFile(path)


@functools.lru_cache(maxsize=None)
def all_sources() -> tuple[str, ...]:
    return tuple(str(p.relative_to(ROOT)) for folder in PACKAGES.values() for p in sorted((ROOT / folder).rglob("*.py")))


def defined_anywhere(name: str) -> list[tuple[str, str]]:
    return [(path, name) for path in all_sources() if name in source(path).names]


def reachable_from(start: tuple[str, str]) -> set[tuple[str, str]]:
    seen, stack = {start}, [start]
    while stack:
        path, name = stack.pop()
        if not (ROOT / path).is_file():
            continue
        for target in source(path).references(name):
            if target not in seen and (ROOT / target[0]).is_file() and target[1] in source(target[0]).names:
                seen.add(target)
                stack.append(target)
    return seen


def pointer_violations(text: str) -> list[str]:
    problems = []
    for match in POINTER.finditer(text):
        path, line, code = match.group(1), int(match.group(2)), match.group(3)
        where = f"line {text.count(chr(10), 0, match.start()) + 1}: {path}:{line}"
        lines = (ROOT / path).read_text().splitlines()
        if line > len(lines):
            problems.append(f"{where} is past the end of the file")
            continue
        if lines[line - 1].strip() != code.strip():
            problems.append(f"{where} now reads {lines[line - 1].strip()!r}, not {code!r}")
            continue
        enclosing = {(path, name) for name in source(path).enclosing(line)}
        if not enclosing:
            problems.append(f"{where} is not inside any function")
            continue
        section_start = max([h.start() for h in HEADING.finditer(text, 0, match.start())], default=0)
        prose = POINTER.sub(" ", text[section_start:match.start()])
        named = [name for name in NAMED.findall(prose) if defined_anywhere(name)]
        if not named:
            problems.append(f"{where} ({', '.join(n for _, n in sorted(enclosing))}): the section names no "
                            f"function before it")
            continue
        if not any(enclosing & reachable_from(candidate) for candidate in defined_anywhere(named[-1])):
            problems.append(f"{where} lies in {', '.join(n for _, n in sorted(enclosing))}, which "
                            f"`{named[-1]}` (the function the text names last) does not reach")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_line_pointers_match_the_code_and_the_named_function(doc):
    problems = pointer_violations(doc.read_text())
    assert not problems, f"{doc.name}:\n" + "\n".join(problems)


def test_a_pointer_into_a_twin_kernel_fails():
    twin = source("kernels/conv2d.py")
    line = next(node.lineno for node in twin.definitions if node.name == "conv2d_depthwise_backward_input_kernel") + 2
    code = (ROOT / "kernels/conv2d.py").read_text().splitlines()[line - 1].strip()
    drifted = f"In `conv2d_backward_input_kernel`: `kernels/conv2d.py:{line}` — `{code}`"
    assert "does not reach" in "\n".join(pointer_violations(drifted))
    aimed = f"In `conv2d_depthwise_backward_input_kernel`: `kernels/conv2d.py:{line}` — `{code}`"
    assert pointer_violations(aimed) == []


@pytest.mark.parametrize("doc", DOCS + [ROOT / "README.md"], ids=lambda p: p.name)
def test_relative_links_and_pictures_exist(doc):
    prose = re.sub(r"`[^`]*`", "", re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.MULTILINE | re.DOTALL))
    missing = [target for target in LINK.findall(prose)
               if not target.startswith(("http://", "https://", "#"))
               and not (doc.parent / target.split("#")[0]).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


def test_batchnorm_doc_points_at_every_backward_term():
    pointers = POINTER.findall((ROOT / "docs" / "batchnorm.md").read_text())
    assert len(pointers) >= 15


@pytest.mark.parametrize("doc", [d for d in DOCS if PYTHON_BLOCK.search(d.read_text())], ids=lambda p: p.name)
def test_python_examples_run_as_written(doc, tmp_path):
    namespace = {"__name__": f"docs_{doc.stem}"}
    for number, block in enumerate(PYTHON_BLOCK.findall(doc.read_text()), start=1):
        # Each block runs from a file of its own, as a reader's script would: @triton.jit reads
        # the source of the function it decorates.
        script = tmp_path / f"{doc.stem}_block{number}.py"
        script.write_text(block)
        exec(compile(block, str(script), "exec"), namespace)
