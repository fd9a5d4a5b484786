#!/usr/bin/env python
"""The package map of README.md ("Layout") and docs/architecture.md, generated from the packages'
and modules' docstrings so that it cannot drift (``tests/unit/test_architecture.py`` checks it).

    python scripts/package_map.py           # print both maps
    python scripts/package_map.py --write   # rewrite them between their markers
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"
BEGIN, END = "<!-- package-map:{} begin (scripts/package_map.py) -->", "<!-- package-map:{} end -->"
WIDTH = 100


def first_sentence(path: Path) -> str:
    """The first sentence of a module's docstring (its one job), on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    # the first ". " before a capital letter that does not end an abbreviation (Sec., Eq., al.)
    m = re.match(r"(.+?(?<!\bSec)(?<!\bEq)(?<!\bal)(?<!\be\.g)(?<!\bi\.e))\.(\s+[A-Z(`]|$)", para)
    return (m.group(1) if m else para).rstrip(":.")


def packages() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.rglob("__init__.py"))


def modules(pkg: Path) -> list[Path]:
    return sorted(p for p in pkg.glob("*.py") if p.name != "__init__.py")


def _rows(rows: list[tuple[str, str]], indent: int) -> list[str]:
    col = max(len(a) for a, _ in rows) + 2
    out = []
    for name, text in rows:
        lines = textwrap.wrap(text, WIDTH - col - indent) or [""]
        out.append(" " * indent + name.ljust(col) + lines[0])
        out += [" " * (indent + col) + line for line in lines[1:]]
    return out


def readme_map() -> str:
    """Each package with its job and its modules (names)."""
    rows = []
    for pkg in packages():
        rel = pkg.relative_to(REPO).as_posix() + "/"
        rows.append((rel, first_sentence(pkg / "__init__.py")))
        names = [m.stem for m in modules(pkg)]
        if names:
            rows.append(("", "modules: " + ", ".join(names)))
    return "\n".join(_rows(rows, 0))


def architecture_map() -> str:
    """Every package and module with the first sentence of its docstring."""
    blocks = []
    for pkg in packages():
        rel = pkg.relative_to(REPO).as_posix()
        rows = [(m.name, first_sentence(m)) for m in modules(pkg)]
        head = f"{rel}/  {first_sentence(pkg / '__init__.py')}"
        blocks.append("\n".join(textwrap.wrap(head, WIDTH, subsequent_indent="    ")
                                + (_rows(rows, 4) if rows else [])))
    return "\n\n".join(blocks)


TARGETS = {"README.md": ("layout", readme_map), "docs/architecture.md": ("modules", architecture_map)}


def section(text: str, tag: str) -> str | None:
    b, e = BEGIN.format(tag), END.format(tag)
    if b not in text or e not in text:
        return None
    return text[text.index(b) + len(b):text.index(e)].strip("\n").removeprefix("```").removesuffix("```").strip("\n")


def render(text: str, tag: str, body: str) -> str:
    b, e = BEGIN.format(tag), END.format(tag)
    return text[:text.index(b) + len(b)] + "\n```\n" + body + "\n```\n" + text[text.index(e):]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="rewrite the maps in place")
    a = p.parse_args(argv)
    for rel, (tag, make) in TARGETS.items():
        path = REPO / rel
        body = make()
        if a.write:
            path.write_text(render(path.read_text(encoding="utf-8"), tag, body), encoding="utf-8")
        else:
            print(f"# {rel}\n{body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
