"""Shared fixtures. The real DAVIS sequences live outside the project (``../shared/data``):
tests that use them skip cleanly when the folder is absent, unless ``STCNN_REQUIRE_ALL=1``
(``tests/support/require_all.py``; set by ``.ci/run``) makes every skip a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# STCNN_REQUIRE_ALL=1: skips become failures naming what is missing
pytest_plugins = ["support.require_all"]

REPO = Path(__file__).resolve().parents[1]


def _shared_davis() -> Path | None:
    env = os.environ.get("STCNN_SHARED_DAVIS")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "DAVIS")
    for c in candidates:
        if (c / "JPEGImages" / "480p").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def real_davis() -> Path:
    """Root of the real DAVIS-2016 sample (blackswan, surf); skips when it is not there."""
    root = _shared_davis()
    if root is None:
        pytest.skip("real DAVIS sample not found (../shared/data/DAVIS or $STCNN_SHARED_DAVIS)")
    return root


@pytest.fixture(scope="session")
def real_davis_or_none() -> Path | None:
    """The real DAVIS-2016 sample's root, or None (for tests that fall back to generated data)."""
    return _shared_davis()


@pytest.fixture(scope="session")
def real_layouts() -> Path:
    """Root of the real release samples (ILSVRC2015 VID val snippet, DAVIS-2017 tennis);
    skips when it is not there."""
    env = os.environ.get("STCNN_SHARED_REAL_LAYOUTS")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "real_layouts"]:
        if (c / "ILSVRC2015").is_dir() and (c / "DAVIS2017").is_dir():
            return c
    pytest.skip("real release samples not found (../shared/data/real_layouts or "
                "$STCNN_SHARED_REAL_LAYOUTS)")


@pytest.fixture(scope="session")
def davis2017_reference() -> Path:
    """The DAVIS-2017 semi-supervised oracle (``DAVIS/`` root, ``results/`` and the official
    davis2017-evaluation outputs in ``official/``); skips when it is not there."""
    env = os.environ.get("STCNN_SHARED_DAVIS2017_REFERENCE")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "reference" / "metrics"
                                             / "davis2017"]:
        if all((c / d).is_dir() for d in ("DAVIS", "results", "official")):
            return c
    pytest.skip("DAVIS-2017 evaluation reference not found (../shared/reference/metrics/davis2017 "
                "or $STCNN_SHARED_DAVIS2017_REFERENCE)")


@pytest.fixture(scope="session")
def train_lake(tmp_path_factory) -> Path:
    """The small synthetic lake the tiny training configs read
    (:func:`support.lakes.build_train_lake`)."""
    from support.lakes import build_train_lake

    return build_train_lake(tmp_path_factory.mktemp("train_lake"))


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real ``mlflow server`` (sqlite) on 127.0.0.1 for the whole session."""
    from support.mlflow_server import start_server

    yield from start_server(tmp_path_factory.mktemp("mlflow_server"))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running single-host SLURM cluster of two virtual nodes (``support/slurm_cluster.py``),
    one for the session; skips, naming the fix, where it cannot run."""
    import sys

    from support.slurm_cluster import (INSTALL_HINT, ClusterStartError, missing_tools,
                                       start_cluster)
    if sys.platform != "linux":
        pytest.skip("SLURM daemons: Linux only")
    missing = missing_tools()
    if missing:
        pytest.skip(f"SLURM/munge programs not found ({', '.join(missing)}): install them with "
                    f"`{INSTALL_HINT}`")
    if os.geteuid() != 0:
        pytest.skip("a private SLURM cluster needs root (slurmd launches the jobs)")
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterStartError as e:
        pytest.skip(f"could not start a single-host SLURM cluster: {e}")
    yield cluster
    cluster.stop()


# -- gpu tests: collected, then deselected unless asked for ---------------------------------------
# A marker expression in addopts would be replaced by any -m on the command line (pytest keeps
# the last -m), so `-m "not slow"` would bring them back: they are deselected here instead, and
# counted in pytest's "N deselected". `--gpu` or STCNN_GPU=1 keeps them (scripts/gpu_check.sh).

def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", default=False,
                     help="run the tests marked gpu (tests/gpu/; they need a CUDA device)")


def _gpu_requested(config) -> bool:
    env = os.environ.get("STCNN_GPU", "").strip().lower() not in ("", "0", "false", "no")
    return bool(config.getoption("--gpu")) or env


def pytest_collection_modifyitems(config, items):
    if _gpu_requested(config):
        return
    deselected = [item for item in items if item.get_closest_marker("gpu") is not None]
    if deselected:
        items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
        config.hook.pytest_deselected(items=deselected)
