"""The docs and docstrings describe the product: no words about how it was made, and no command or benchmark
reads a data folder it was not pointed at."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support.docblocks import python_prose

REPO = Path(__file__).resolve().parents[2]

# how the project was made: work items, working sessions, which machine was at hand
MAKING = re.compile(r"\bissues? #?\d+|\b(this|same|that|earlier|next|first GPU) session\b|"
                    r"\bsession that\b|\bwas lent\b|\bnot drawn\b|\$OUT\b|\bHEAD of\b|"
                    r"\bround \d+\b", re.I)
# an implicit default onto the data folder beside the checkout
SHARED_DEFAULT = re.compile(r"""["']shared["']\s*/\s*["']data["']|\.\./shared/data|"""
                            r"""parent\s*/\s*["']shared["']""")


def _files(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", *patterns], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [REPO / p for p in out.split() if (REPO / p).is_file()]


def making_words(text: str) -> list[str]:
    return [m.group(0) for m in MAKING.finditer(text)]


def test_docs_and_docstrings_have_no_words_about_how_the_project_was_made():
    texts = [(p, p.read_text()) for p in _files("*.md")]
    texts += [(p, python_prose(p)) for p in _files("*.py")
              if p.name != "test_docs_product.py"]    # its own examples of the words
    found = [f"{p.relative_to(REPO)}: {w!r}" for p, text in texts for w in making_words(text)]
    assert not found, "\n".join(found)


def test_the_check_catches_words_of_the_making():
    assert making_words("as issue 11 asks; measured in the same session; No GPU was lent; "
                        "--out $OUT/x; HEAD of 12-03") == [
        "issue 11", "same session", "was lent", "$OUT", "HEAD of"]
    assert making_words("a session-scoped fixture; the issue of shard counts") == []


def test_no_command_or_benchmark_reads_the_shared_data_folder_implicitly():
    code = _files("pipeline/*.py", "launch/*.py", "benchmarks/*.py", "scripts/*")
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in code
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if SHARED_DEFAULT.search(line)]
    assert not found, "\n".join(found)
