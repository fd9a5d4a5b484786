"""``STCNN_REQUIRE_ALL=1`` (``tests/support/require_all.py``, set by ``.ci/run``): a pytest run
over a small suite of its own shows each kind of skip becoming a failure that names what was
missing, while the same suite without the variable skips as before."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support import child_env

TESTS = Path(__file__).resolve().parents[1]

SUITE = {
    "test_inner.py": '''
import pytest

@pytest.fixture
def cluster():
    pytest.skip("no SLURM here: apt-get install -y slurm-wlm")

def test_passes():
    pass

def test_skips_in_the_body():
    pytest.skip("the real DAVIS sample is absent")

@pytest.mark.skipif(True, reason="needs the FFCV package")
def test_skipif_mark():
    pass

def test_skips_in_a_fixture(cluster):
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_xfail_is_left_alone():
    assert False
''',
    "test_module_skip.py": '''
import pytest
pytest.importorskip("a_package_that_is_not_installed_xyz")

def test_never_collected():
    pass
''',
}


def _pytest(folder: Path, require: str | None) -> subprocess.CompletedProcess:
    env = child_env(PYTHONPATH=str(TESTS))
    env.pop("STCNN_REQUIRE_ALL", None)
    if require is not None:
        env["STCNN_REQUIRE_ALL"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                           "-p", "support.require_all", "--rootdir", str(folder), str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def _suite(tmp_path: Path) -> Path:
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_without_the_variable_missing_things_skip(tmp_path):
    for value in (None, "0"):
        r = _pytest(_suite(tmp_path), value)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert re.search(r"1 passed, 4 skipped, 1 xfailed", out), out
        assert "skips are failures" not in out


def test_with_the_variable_every_skip_fails_naming_what_is_missing(tmp_path):
    suite = _suite(tmp_path)
    (suite / "test_module_skip.py").unlink()       # a collection error stops the run: below
    r = _pytest(suite, "1")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "STCNN_REQUIRE_ALL=1: skips are failures" in out       # the report header says so
    # a skip in the body fails the test; one in setup (skipif mark, fixture) is a setup error
    assert re.search(r"1 failed, 1 passed, 1 xfailed, 2 errors", out), out
    for reason in ("the real DAVIS sample is absent", "needs the FFCV package",
                   "no SLURM here: apt-get install -y slurm-wlm"):
        assert reason in out, f"{reason!r} not in the report:\n{out}"
    assert "FAILED test_inner.py::test_skips_in_the_body" in out, out
    for nodeid in ("test_inner.py::test_skipif_mark", "test_inner.py::test_skips_in_a_fixture"):
        assert f"ERROR {nodeid}" in out, out
    assert "skipped" not in out.splitlines()[-1], out


def test_with_the_variable_a_module_level_skip_is_a_collection_error(tmp_path):
    suite = _suite(tmp_path)
    r = _pytest(suite, "1")
    out = r.stdout + r.stderr
    assert r.returncode == 2, out                   # interrupted: nothing runs
    assert "ERROR test_module_skip.py" in out, out
    assert "could not import 'a_package_that_is_not_installed_xyz'" in out, out
