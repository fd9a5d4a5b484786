"""Lets ``python launch/<script>.py`` import the ``pipeline`` package from a source checkout."""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
