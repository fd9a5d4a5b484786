"""The one logging set-up of every command, and the one line that sums up a job's data events.

Library modules report through their own ``log = logging.getLogger(__name__)``: warnings with
``log.warning``, never ``print`` or ``warnings.warn``. Every command (``pipeline.cli.common.
command``) calls :func:`setup_logging`: records at WARNING and above show on stderr as
``warning: <message>``; ``STCNN_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR) sets another level.

A job that reads or writes data ends with :func:`report_events`: one line that counts what was
skipped, retried or spooled (corrupt samples, bad inputs, spooled tracking calls), a warning
when anything happened and an info line otherwise; the same counts go into the job's summary.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Mapping

from pipeline.core.config import ConfigError

LEVEL_ENV = "STCNN_LOG_LEVEL"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (a redirect, a test's capture),
    not to the stream that was current when the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    """``warning: <message>``: the level in lower case, then the message (and any traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def setup_logging(default: str = "WARNING") -> Callable[[], None]:
    """Show records of ``$STCNN_LOG_LEVEL`` (else ``default``) and above on stderr, through one
    handler on the root logger (set up once per process; a second call only sets the level).
    Returns a function that puts back the level and handlers found (for in-process callers)."""
    name = (os.environ.get(LEVEL_ENV) or default).strip().upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ConfigError(f"{LEVEL_ENV}={name!r} is not a logging level. Fix: set it to DEBUG, "
                          "INFO, WARNING or ERROR, or unset it")
    root = logging.root
    old_level, old_handlers = root.level, list(root.handlers)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(level)

    def restore() -> None:
        root.setLevel(old_level)
        for h in root.handlers[:]:
            if h not in old_handlers:
                root.removeHandler(h)

    return restore


def report_events(log: logging.Logger, job: str, counts: Mapping[str, int]) -> dict[str, int]:
    """Log the one line that sums up ``job``'s data events (``counts``: event kind -> count):
    a warning naming the kinds that happened, or an info line when none did. Returns the counts
    (as a plain dict, for the job's summary)."""
    counts = {k: int(v) for k, v in counts.items()}
    happened = {k: v for k, v in counts.items() if v}
    if happened:
        log.warning("%s: data events: %s", job,
                    ", ".join(f"{k} {v}" for k, v in sorted(happened.items())))
    else:
        log.info("%s: no data events (nothing skipped, retried or spooled)", job)
    return counts
