"""``STCNN_REQUIRE_ALL=1``: every skip becomes a failure that names what was missing.

For a user, a test that needs something absent (a package, SLURM, root, the real DAVIS sample
under ``../shared``, a Docker Compose v2 CLI, ...) skips and says what to install: the README's
test command runs anywhere. CI has all of it (``.ci/run`` sets this variable), so a skip there
would be a check that silently did not run. With the variable set, this plugin (loaded by
``tests/conftest.py``) turns

* a skip during a test's setup, call or teardown (``pytest.skip``, ``skipif`` marks,
  ``importorskip`` inside a test or fixture) into a failed test, and
* a skip while collecting a module (a module-level ``importorskip`` or ``pytest.skip``) into a
  collection error,

each with the original reason, so the report says what to install. ``xfail`` is left alone.
"""

from __future__ import annotations

import os

import pytest

ENV = "STCNN_REQUIRE_ALL"


def required() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def _reason(longrepr) -> str:
    """The skip reason of a report's ``longrepr`` (a (path, line, reason) tuple for skips)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, line, reason = longrepr
        return f"{reason} ({path}:{line})"
    return str(longrepr)


def _message(what: str, reason: str) -> str:
    return (f"{ENV}=1: {what} would have been skipped, and a skip is a failure here: "
            f"{reason.removeprefix('Skipped: ')}\n"
            f"Install or provide what is missing (bash scripts/setup.sh installs the packages, "
            f"SLURM, the Docker Compose CLI and FFCV's libraries as root), or unset {ENV} to let "
            f"such tests skip.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and required() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = _message(f"test {item.nodeid}", _reason(report.longrepr))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.outcome == "skipped" and required():
        report.outcome = "failed"
        report.longrepr = _message(f"everything in {collector.nodeid}", _reason(report.longrepr))


def pytest_report_header(config):
    if required():
        return f"{ENV}=1: skips are failures"
    return None
