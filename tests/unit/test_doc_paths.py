"""Every repository path the docs and docstrings cite exists.

A cited path is a token that starts with one of the repository's top-level folders
(``pipeline/``, ``launch/``, ``configs/``, ``tests/``, ...), in a Markdown file or in a Python
file's docstrings and comments. Left out: tokens with a placeholder (``<name>``, ``*``,
``{a,b}``, ``...``, ``NNN``: a pattern, not a file) and paths git ignores (outputs and files a
user creates, such as ``shards/davis2016/train`` or ``docker/.env``). ``path.py::name`` must
also define ``name``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support.docblocks import python_prose

REPO = Path(__file__).resolve().parents[2]
TOPS = ("pipeline", "launch", "configs", "scripts", "benchmarks", "tests", "docs", "docker",
        "shards")
PATH_RE = re.compile(r"(?<![\w./~-])((?:%s)/[\w./@-]*[\w/])(::\w+)?" % "|".join(TOPS))
PLACEHOLDER = re.compile(r"[<>*{}]|\.\.\.|NNN|XXXX")


def _tracked(suffix: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", f"*{suffix}"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / p for p in out.split() if (REPO / p).is_file()]


def cited(text: str) -> list[tuple[str, str | None]]:
    found = []
    for line in text.splitlines():
        for m in PATH_RE.finditer(line):
            path, func = m.group(1).rstrip("./"), m.group(2)
            # a path continuing with a placeholder (`configs/<phase>.yaml`) is a pattern
            rest = line[m.end(1):m.end(1) + 1]
            if PLACEHOLDER.search(path) or rest in "<*{" and rest:
                continue
            found.append((path, func[2:] if func else None))
    return found


def missing(path: str, func: str | None) -> str | None:
    p = REPO / path
    if not p.exists():
        return "does not exist"
    if func and p.is_file() and not re.search(rf"^\s*(async )?(def|class) {func}\b|^{func}\s*=",
                                               p.read_text(), re.M):
        return f"has no {func}"
    return None


def _ignored(paths: set[str]) -> set[str]:
    """The paths git ignores (outputs, files a user creates)."""
    out = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO,
                         input="\n".join(sorted(paths)), capture_output=True, text=True).stdout
    return set(out.split())


def test_cited_repository_paths_exist():
    sources = [(p, p.read_text()) for p in _tracked(".md")]
    sources += [(p, python_prose(p)) for p in _tracked(".py")]
    cites = {(path.relative_to(REPO), c, f) for path, text in sources for c, f in cited(text)}
    ignored = _ignored({c for _, c, _ in cites})
    problems = sorted(f"{src} cites {c}{'::' + f if f else ''}: {why}"
                      for src, c, f in cites if c not in ignored
                      for why in [missing(c, f)] if why)
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_stale_path_and_skips_patterns():
    text = ("see `pipeline/tracking.py::redact` and pipeline/train/loop.py, "
            "configs/<phase>.yaml, shards/<dataset>/x, tests/unit/test_doc_paths.py::cited")
    got = cited(text)
    assert got == [("pipeline/tracking.py", "redact"), ("pipeline/train/loop.py", None),
                   ("tests/unit/test_doc_paths.py", "cited")]
    assert [missing(*c) for c in got] == ["does not exist", None, None]
