"""The command blocks of the docs, and how each is checked.

A command block is a fenced block whose info string is ``bash``, ``sh``, ``shell`` or
``console`` in one of :data:`DOCS`. Each one is either

* **run** as written by ``tests/integration/test_docs_commands.py`` (the default), or
* **marked** as needing what the test machine lacks (a GPU, a cluster, a Docker engine, hours of
  compute): the line just before its fence says so in italics and names the test that runs its
  local equivalent, e.g.::

      *Needs a GPU cluster. Local equivalent: `tests/integration/test_train_ddp.py`.*

A block that is neither fails the test. Fences are parsed with markdown-it-py (CommonMark: the
same fences GitHub renders), not with a regular expression of our own.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]

# The documents whose command blocks are checked (repository-relative).
DOCS = ("README.md", "docs/architecture.md", "docs/layouts.md", "docs/model.md",
        "shards/README.md", "launch/slurm/README.md", "docker/README.md")

SHELL_INFO = {"bash", "sh", "shell", "console"}
MARK_RE = re.compile(r"^\*(?P<why>Needs [^*]*?)\s*Local equivalent:\s*"
                     r"`(?P<test>tests/[^`:]+\.py)(?:::(?P<func>\w+))?`[^*]*\*\s*$")


@dataclass
class Block:
    doc: str            # repository-relative path of the document
    line: int           # 1-based line of the opening fence
    info: str
    text: str
    mark: re.Match | None   # the "Needs ... Local equivalent: `tests/...`" line, if any

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def marked(self) -> bool:
        return self.mark is not None


def _line_before(lines: list[str], fence_index: int) -> str:
    i = fence_index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    return lines[i].strip() if i >= 0 else ""


def command_blocks(doc: str, root: Path = REPO) -> list[Block]:
    text = (root / doc).read_text()
    lines = text.splitlines()
    blocks = []
    for tok in MarkdownIt("commonmark").parse(text):
        if tok.type != "fence" or tok.info.strip().split(" ")[0] not in SHELL_INFO:
            continue
        start = tok.map[0]
        blocks.append(Block(doc, start + 1, tok.info.strip(), tok.content,
                            MARK_RE.match(_line_before(lines, start))))
    return blocks


def all_blocks(root: Path = REPO) -> list[Block]:
    return [b for doc in DOCS for b in command_blocks(doc, root)]


def mark_problem(block: Block, root: Path = REPO) -> str | None:
    """Why a marked block's mark is not valid (None when it is): the named test file and
    function must exist."""
    m = block.mark
    path = root / m["test"]
    if not path.is_file():
        return f"{block.where}: its local equivalent {m['test']} does not exist"
    if m["func"] and not re.search(rf"^(async )?def {m['func']}\b", path.read_text(), re.M):
        return f"{block.where}: {m['test']} has no test {m['func']}"
    return None


def python_prose(path: Path) -> str:
    """The docstrings and comments of a Python file."""
    src = path.read_text()
    parts = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            parts.append(tok.string)
    return "\n".join(parts)
