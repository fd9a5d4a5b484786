"""Asserting the warnings the pipeline logs (``log.warning`` of its modules), like
``pytest.warns`` does for Python warnings."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Iterator

import pytest


@contextlib.contextmanager
def logs_warning(caplog: pytest.LogCaptureFixture, match: str | None = None,
                 logger: str = "pipeline") -> Iterator[list[str]]:
    """Inside the block at least one warning (or worse) is logged under ``logger``, and with
    ``match`` one whose message ``re.search``-es it. Yields the list that holds their messages
    once the block ends."""
    messages: list[str] = []
    with caplog.at_level(logging.WARNING, logger=logger):
        start = len(caplog.records)
        yield messages
        messages += [r.getMessage() for r in caplog.records[start:]
                     if r.levelno >= logging.WARNING and r.name.startswith(logger)]
    assert messages, f"no warning was logged under {logger!r}"
    if match is not None:
        assert any(re.search(match, m) for m in messages), \
            f"no logged warning matches {match!r}: {messages}"
