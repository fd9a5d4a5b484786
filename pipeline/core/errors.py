"""The error shape shared by every input check: which file, what is wrong with it, the fix."""

from __future__ import annotations

from pathlib import Path


class FileProblem(ValueError):
    """Bad input: the message is ``<path>: <problem>. Fix: <fix>``; the three parts stay
    readable as attributes, and the error pickles (it crosses worker processes)."""

    def __init__(self, path: Path | str, problem: str, fix: str):
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}. Fix: {fix}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem, self.fix))
