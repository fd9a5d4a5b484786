"""Durable file operations of checkpoints: torch saves that are atomic and fsynced, folder removal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from pipeline.core.atomic import atomic_open
from pipeline.train.checkpoint.layout import CheckpointError, META, TMP_PREFIX


# --------------------------------------------------------------------------------------------
# helpers


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` to a file object through temp + rename; errors name the file."""
    try:
        with atomic_open(path) as f:
            torch.save(obj, f)
    except Exception as e:
        raise CheckpointError(
            f"could not write {path}: {type(e).__name__}: {e}. Checkpoint contents must be "
            f"tensors, numbers, strings, None and lists/tuples/dicts of them (state_dict()s "
            f"qualify).") from e


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_folder(path: Path) -> None:
    """Remove a checkpoint folder so that no crash leaves a half-deleted one that still looks
    complete: rename it to a ``.tmp_`` name first (atomic), then delete."""
    doomed = path.with_name(f"{TMP_PREFIX}removed_{path.name}_{os.getpid()}")
    os.rename(path, doomed)
    rmtree(doomed)


def relative_files(folder: Path) -> list[str]:
    """Files under ``folder`` (posix relative paths), without meta.json and writers' temps."""
    out = []
    for p in folder.rglob("*"):
        if p.is_file() and p.name != META and not (p.name.startswith(".")
                                                   and p.name.endswith(".tmp")):
            out.append(p.relative_to(folder).as_posix())
    return sorted(out)
