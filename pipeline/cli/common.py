"""The command line every ``stcnn-*`` command shares (argparse-based): one error format, help
with every default shown, ``--version``, one list style.

How a command uses it::

    from pipeline.cli import common

    NAME = "stcnn-weights"

    @common.command(NAME, errors=(WeightsError,))     # + the command's own user-error classes
    def main(argv: list[str] | None = None) -> int:
        p = common.parser(NAME, __doc__)               # --help shows every default; --version
        p.add_argument("--out", required=True, help="the file to write")       # help= always
        p.add_argument("--sets", nargs="+", help="<dataset>/<split> under the lake")  # lists
        a = p.parse_args(argv)
        if not Path(a.out).parent.is_dir():            # check every input before writing
            raise common.UserError(f"{Path(a.out).parent} does not exist",
                                   "create it, or pass another --out")
        ...
        return 0

* A user error is one line on stderr, ``stcnn-X: error: <problem>. Fix: <what to do>``, and
  exit status 2: usage mistakes found by the parser, ``UserError``, ``FileProblem``,
  ``ConfigError`` and the classes passed as ``errors``. A message with no fix of its own gets
  the command's ``fix`` (default: look at ``stcnn-X --help``).
* Anything else is a bug: its traceback stays, exit status 1.
* ``main(["--help"])`` and ``main(["--version"])`` return 0 (the parser's exit becomes the
  return value), so a command is testable in-process.
* Lists are repeated values after one flag: ``--sets a b`` (``nargs="+"``), never commas.
* A command with a config takes ``--print-config``: it prints
  ``pipeline.core.config.config_text(cfg, ...)`` (the resolved YAML and the valid keys) and
  returns 0 before anything is run or written.
"""

from __future__ import annotations

import argparse
import functools
import sys
from importlib import metadata
from typing import Callable, NoReturn

from pipeline.core.config import ConfigError
from pipeline.core.errors import FileProblem

DIST = "stcnn-pipeline"


def version() -> str:
    """The installed package's version."""
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


class UserError(Exception):
    """Bad input found by a command: ``problem`` (what is wrong, naming the file or setting)
    and ``fix`` (what to do)."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. Fix: {fix}")


def split_fix(exc: BaseException, default_fix: str) -> tuple[str, str]:
    """``(problem, fix)`` of a user error, each on one line: an error's own ``problem``/``fix``
    (FileProblem, UserError, MaskFormatError, ...) or a message's ``... Fix: ...``; else the
    message and ``default_fix``."""
    def line(text: object) -> str:
        return " ".join(str(text).split()).lstrip(": ").rstrip(". ")

    problem, fix = getattr(exc, "problem", None), getattr(exc, "fix", None)
    if isinstance(problem, str) and isinstance(fix, str):
        path = getattr(exc, "path", None)
        return line(f"{path}: {problem}" if path else problem), line(fix)
    text = line(exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc)
    for sep in (". Fix: ", "; Fix: ", " Fix: "):
        if sep in text:
            problem, fix = text.split(sep, 1)
            return line(problem), line(fix)
    return text or type(exc).__name__, line(default_fix)


def error_line(name: str, exc: BaseException | str, fix: str | None = None) -> str:
    """``<name>: error: <problem>. Fix: <fix>`` for an exception or a problem text."""
    default = fix or f"see `{name} --help`"
    problem, fix = split_fix(exc if isinstance(exc, BaseException) else UserError(exc, default),
                             default)
    return f"{name}: error: {problem}. Fix: {fix}"


def fail(name: str, exc: BaseException | str, fix: str | None = None) -> int:
    """Print the error line of ``exc`` on stderr; the exit status of a user error (2)."""
    print(error_line(name, exc, fix), file=sys.stderr, flush=True)
    return 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; every option's default shown unless its help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or isinstance(action.default, bool) \
                or action.default in (argparse.SUPPRESS, []) \
                or not (action.option_strings or action.nargs in ("?", "*")):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are the one-line ``stcnn-X: error:`` format."""

    def __init__(self, *args, command: str, fix: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.command = command
        self.fix = fix or f"see `{self.prog} --help`"

    def error(self, message: str) -> NoReturn:
        self.exit(2, error_line(self.command, UserError(message, self.fix)) + "\n")


def parser(name: str, description: str | None = None, *, prog: str | None = None,
           epilog: str | None = None, fix: str | None = None) -> Parser:
    """The argument parser of command ``name`` (``prog``: its usage name, default ``name``)."""
    p = Parser(prog=prog or name, description=description, epilog=epilog,
               formatter_class=HelpFormatter, command=name, fix=fix)
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                   help="print the version and exit")
    return p


def command(name: str, errors: tuple[type[BaseException], ...] = (), fix: str | None = None
            ) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate ``main(argv) -> int`` of command ``name``: user errors become the one-line
    error and exit status 2; the parser's exit (``--help``, usage errors) its return value."""
    caught = (UserError, FileProblem, ConfigError, *errors)

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    return e.code or 0
                raise
            except caught as e:
                return fail(name, e, fix)
        return run
    return wrap
