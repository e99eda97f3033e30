"""Examples that cannot rot: every docstring example and every Python block of the docs runs.

* The docstring examples (``>>>``) of every module of the package run as doctests.
* Every fenced ```` ```python ```` block of README.md and docs/**/*.md runs, the blocks of one
  file in order in one namespace (as a reader would paste them). A block that needs what this
  machine may lack (a GPU, graphviz's ``dot``) is preceded by ``<!-- docs-test: skip -->``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import jax
import pytest

import chainrule

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _as_a_user_runs_them():
    """Examples run as a user runs them: float32 defaults (conftest turns x64 on)."""
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", True)


SKIP_MARK = "<!-- docs-test: skip -->"


def _modules() -> list[str]:
    names = ["chainrule"]
    for info in pkgutil.walk_packages(chainrule.__path__, "chainrule."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    tests = [t for t in finder.find(module, name) if t.examples]
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests failed in {name}"


def _doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.exists() and "```python" in f.read_text()]


_BLOCK = re.compile(r"(?P<pre>[^\n]*\n)?```python\n(?P<code>.*?)```", re.S)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block not marked to skip."""
    out = []
    for m in _BLOCK.finditer(text):
        if m.group("pre") and SKIP_MARK in m.group("pre"):
            continue
        line = text.count("\n", 0, m.start("code")) + 1
        out.append((line, m.group("code")))
    return out


@pytest.mark.parametrize("path", _doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_python_blocks_run(path, tmp_path, monkeypatch):
    # Blocks that write files write them in a scratch folder that sees the repo's configs.
    for name in ("configs", "experiments"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for line, code in python_blocks(path.read_text()):
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception as e:  # the file and line of the block in the failure
            raise AssertionError(f"{path.relative_to(ROOT)}, block at line {line}: {e!r}") from e


def test_block_finder_sees_blocks_and_skips():
    text = "x\n```python\na = 1\n```\n" + SKIP_MARK + "\n```python\nraise SystemExit\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n")]
