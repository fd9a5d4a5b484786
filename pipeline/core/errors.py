"""The error shape every user-facing error shares: what is wrong (naming the file or setting)
and what to do about it.

* :class:`PipelineError` ``(problem, fix)`` is the base of every error a user fixes; its message
  is ``<problem>. Fix: <fix>``. A message written as one text (``"<problem>. Fix: <fix>"``, or a
  problem alone) is split into the same two attributes; ``fix`` is None when it names none.
* ``exit_status``: what a command exits with when it reports the error (2: bad input; a class
  whose run failed for a reason that is not the input, e.g. a diverged training, says 1).
* Every subclass pickles whatever its constructor's signature (errors cross worker processes):
  it is rebuilt from the arguments it was made with.
* :class:`FileProblem` ``(path, problem, fix)``: bad input in one file, ``<path>: <problem>. Fix:
  <fix>``.

Errors that are not the user's to fix (a bug, an internal signal between threads) do not derive
from it: a command prints their traceback and exits 1 (pipeline/cli/common.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIX_SEPARATORS = (". Fix: ", "; Fix: ", " Fix: ")


def split_message(text: str) -> tuple[str, str | None]:
    """``(problem, fix)`` of a message ``<problem>. Fix: <fix>``; ``(text, None)`` without one."""
    for sep in FIX_SEPARATORS:
        if sep in text:
            problem, fix = text.split(sep, 1)
            return problem, fix
    return text, None


def _remake(cls: type[PipelineError], args: tuple, kwargs: dict[str, Any]) -> PipelineError:
    return cls(*args, **kwargs)


class PipelineError(Exception):
    """Bad input or a setting the user fixes: ``problem`` (what is wrong, naming the file or
    setting) and ``fix`` (what to do; None when the message names none)."""

    exit_status = 2

    def __new__(cls, *args: Any, **kwargs: Any):
        self = super().__new__(cls)
        self._made_with = (args, kwargs)
        return self

    def __init__(self, problem: str, fix: str | None = None):
        text = str(problem) if fix is None else f"{problem}. Fix: {fix}"
        if fix is None:
            problem, fix = split_message(text)
        self.problem, self.fix = str(problem), fix
        super().__init__(text)
        self.args = (text,)  # set here too: OSError's __init__ leaves them to __new__

    def __str__(self) -> str:  # the message, also where a builtin base (OSError) formats its own
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        args, kwargs = self._made_with
        return (_remake, (type(self), args, kwargs), self.__dict__)


class FileProblem(PipelineError, ValueError):
    """Bad input in one file: the message is ``<path>: <problem>. Fix: <fix>``; the three parts
    stay readable as attributes."""

    def __init__(self, path: Path | str, problem: str, fix: str):
        self.path = str(path)
        super().__init__(problem, fix)
        self.args = (f"{path}: {self.args[0]}",)


class InputMissing(PipelineError, FileNotFoundError):
    """A file, folder, object or shard set the user named does not exist (or holds nothing
    usable); a ``FileNotFoundError`` too."""
