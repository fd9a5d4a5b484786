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
