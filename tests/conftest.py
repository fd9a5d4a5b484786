"""Shared fixtures. The real DAVIS sequences live outside the project (``../shared/data``):
tests that use them skip cleanly when the folder is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
