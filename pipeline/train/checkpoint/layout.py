"""What a checkpoint folder holds: ``step_<N>/`` with ``meta.json``, ``shared.pt``, one file per
rank and the engines' own folders; the names, the format version, and the errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import PipelineError



FORMAT = 1
META = "meta.json"
SHARED = "shared.pt"
ENGINES = "engines"
ENGINE_TAG = "state"
TMP_PREFIX = ".tmp_"
STEP_RE = re.compile(r"^step_(\d+)$")
_ENGINE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CheckpointError(PipelineError, RuntimeError):
    """A checkpoint cannot be written or read; the message names the file or folder and the fix."""


class WorldSizeMismatch(CheckpointError):
    """The checkpoint was written by a different number of ranks than this run has."""


@dataclass
class Loaded:
    """What :meth:`CheckpointManager.load` returns."""

    path: Path                      # the checkpoint folder
    step: int
    shared: dict                    # the ``shared`` dict given to save()
    rank_state: dict | None         # this rank's ``rank_state``; None when world sizes differ
    world_size: int                 # the world size the checkpoint was written with
    meta: dict = field(default_factory=dict)  # meta.json


def step_folder_name(step: int) -> str:
    return f"step_{step:08d}"


def rank_file_name(rank: int) -> str:
    return f"rank_{rank:05d}.pt"
