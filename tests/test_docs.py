"""Every ```python block of docs/*.md and README.md runs, so the documentation cannot drift from the code.

One test per block, named after its file and first line. The blocks of one file
run in order in one shared namespace (a page may build on its earlier
examples), with the working directory a fresh temporary folder per file, so
examples may write files without touching the repository. Selecting a single
block (pytest -k) runs the blocks above it first. Fence a block that must not
run as ```text or ```bash.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")  # examples that plot must not need a display

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]

_OPEN = re.compile(r"^(\s*)```python\s*$")
_CLOSE = re.compile(r"^\s*```\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line in the markdown file
    code: str
    index: int  # position among the file's python blocks

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def python_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The ```python blocks of a markdown file, in order; indented fences (in lists) are dedented."""
    lines = (path.read_text() if text is None else text).splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, start=1):
        if start is None:
            if _OPEN.match(line):
                start = number + 1
        elif _CLOSE.match(line):
            code = textwrap.dedent("\n".join(lines[start - 1: number - 1]))
            blocks.append(Block(path, start, code, len(blocks)))
            start = None
    if start is not None:
        raise ValueError(f"{path}: the ```python block opened at line {start - 1} is never closed")
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES if path.exists() for block in python_blocks(path)]


class _FileRun:
    """The shared namespace and working directory of one markdown file, and how many of its blocks ran."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.namespace: dict = {"__name__": "__docs__"}
        self.done = 0


_runs: dict[Path, _FileRun] = {}


def _execute(block: Block, run: _FileRun) -> None:
    # Leading newlines put tracebacks on the markdown file's own line numbers.
    code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec")
    exec(code, run.namespace)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.name for b in ALL_BLOCKS])
def test_doc_example_runs(block: Block, tmp_path_factory, monkeypatch):
    run = _runs.get(block.path)
    if run is None:
        run = _runs[block.path] = _FileRun(tmp_path_factory.mktemp(block.path.stem))
        torch.manual_seed(0)
    monkeypatch.chdir(run.cwd)
    earlier = [b for b in ALL_BLOCKS if b.path == block.path and run.done <= b.index < block.index]
    for previous in earlier:
        try:
            _execute(previous, run)
        except Exception as error:
            pytest.fail(f"cannot run {block.name}: the earlier block {previous.name} fails: {error!r}")
        run.done = previous.index + 1
    if run.done > block.index:
        pytest.skip("already run (and passed) ahead of a later block of this file")
    run.done = block.index + 1  # counted even on failure, so later blocks report their own errors
    _execute(block, run)


def test_docs_have_examples():
    # Guards against a glob or a fence regex that silently finds nothing.
    assert (REPO / "docs" / "index.md").exists()
    assert len({b.path for b in ALL_BLOCKS}) >= 3 and len(ALL_BLOCKS) >= 5


def test_python_blocks_parsing(tmp_path):
    text = "\n".join([
        "# title",
        "```python",
        "x = 1",
        "```",
        "```text",
        "not python",
        "```",
        "- a list item:",
        "  ```python",
        "  if x:",
        "      y = 2",
        "  ```",
        "```bash",
        "echo no",
        "```",
    ])
    blocks = python_blocks(tmp_path / "page.md", text)
    assert [(b.line, b.code, b.index) for b in blocks] == [(3, "x = 1", 0), (10, "if x:\n    y = 2", 1)]
    with pytest.raises(ValueError, match=r"never closed"):
        python_blocks(tmp_path / "page.md", "```python\nx = 1\n")
