"""The command line every ``stcnn-*`` command shares (argparse-based): one error format, help
with every default shown, ``--version``, one list style.

How a command uses it::

    from pipeline.cli import common

    NAME = "stcnn-weights"

    @common.command(NAME)
    def main(argv: list[str] | None = None) -> int:
        p = common.parser(NAME, __doc__)               # --help shows every default; --version
        p.add_argument("--out", required=True, help="the file to write")       # help= always
        p.add_argument("--sets", nargs="+", help="<dataset>/<split> under the lake")  # lists
        a = p.parse_args(argv)
        if not Path(a.out).parent.is_dir():            # check every input before writing
            raise PipelineError(f"{Path(a.out).parent} does not exist",
                                "create it, or pass another --out")
        ...
        return 0

* A user error is one line on stderr, ``stcnn-X: error: <problem>. Fix: <what to do>``, and
  exit status 2: usage mistakes found by the parser, and every
  :class:`~pipeline.core.errors.PipelineError` (the base of every user-facing error; a class
  may set another ``exit_status``, e.g. a diverged training's 1). A message with no fix of its
  own gets the command's ``fix`` (default: look at ``stcnn-X --help``). Code that finds bad
  user input raises a PipelineError there, where it knows the input is the user's.
* Anything else is a bug: its traceback stays, exit status 1. A command catches nothing else.
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

from pipeline.core.errors import PipelineError
from pipeline.core.logs import setup_logging

DIST = "stcnn-pipeline"


def version() -> str:
    """The installed package's version."""
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def error_line(name: str, exc: PipelineError | str, fix: str | None = None) -> str:
    """``<name>: error: <problem>. Fix: <fix>`` for a user error or a problem text, on one
    line; ``fix`` (default: look at ``<name> --help``) where the error names none."""
    def line(text: object) -> str:
        return " ".join(str(text).split()).lstrip(": ").rstrip(". ")

    err = exc if isinstance(exc, PipelineError) else PipelineError(exc)
    path = getattr(err, "path", None)
    problem = line(f"{path}: {err.problem}" if path else err.problem)
    return f"{name}: error: {problem}. Fix: {line(err.fix or fix or f'see `{name} --help`')}"


def fail(name: str, exc: PipelineError | str, fix: str | None = None) -> int:
    """Print the error line of ``exc`` on stderr; the exit status it calls for (a user
    error's 2 unless its class says otherwise)."""
    print(error_line(name, exc, fix), file=sys.stderr, flush=True)
    return exc.exit_status if isinstance(exc, PipelineError) else PipelineError.exit_status


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
        self.exit(2, error_line(self.command, PipelineError(message, self.fix)) + "\n")


def parser(name: str, description: str | None = None, *, prog: str | None = None,
           epilog: str | None = None, fix: str | None = None) -> Parser:
    """The argument parser of command ``name`` (``prog``: its usage name, default ``name``)."""
    p = Parser(prog=prog or name, description=description, epilog=epilog,
               formatter_class=HelpFormatter, command=name, fix=fix)
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                   help="print the version and exit")
    return p


def command(name: str, fix: str | None = None,
            log_level: str = "WARNING") -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate ``main(argv) -> int`` of command ``name``: logging set up
    (:func:`pipeline.core.logs.setup_logging`: ``log_level`` and above on stderr unless
    ``$STCNN_LOG_LEVEL`` says otherwise); a :class:`PipelineError` becomes the one-line error
    and its exit status (2); the parser's exit (``--help``, usage errors) the return value;
    anything else propagates (a bug: traceback, exit status 1)."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            restore = None
            try:
                restore = setup_logging(log_level)
                return main(argv)
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    return e.code or 0
                raise
            except PipelineError as e:
                return fail(name, e, fix)
            finally:
                if restore is not None:
                    restore()
        return run
    return wrap
