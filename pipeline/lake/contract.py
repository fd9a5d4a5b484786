"""The shard contract, in one place (``shards/README.md``): what a shard set folder or prefix holds
and when a shard counts as finished. Writer, lister, catalog, validator, FFCV store and object
store all ask this module.

    <lake>/<dataset>/<split>/NNNNN.tar           the samples (WebDataset: members <key>.<ext>)
                             NNNNN.parquet       one row per sample (the shard's index)
                             NNNNN_stats.json    counts and plan digest; written LAST
                             manifest.json       the plan of the whole set
                             catalog.parquet     every shard's rows, once every shard is finished

A member ``<key>.<ext>`` belongs to sample ``<key>`` (:func:`split_member`, the WebDataset rule).
A shard is finished when its stats file exists: readers take only finished shards, and every
writer or uploader puts the stats file after the tar and the parquet (:func:`upload_order`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from pipeline.core.errors import FileProblem

SHARD_RE = re.compile(r"^(\d+)\.tar$")
TAR_SUFFIX = ".tar"
INDEX_SUFFIX = ".parquet"
STATS_SUFFIX = "_stats.json"
MANIFEST = "manifest.json"
CATALOG = "catalog.parquet"
SET_FILES = (MANIFEST, CATALOG)   # a set's own files, (re)written after every shard


def shard_name(index: int) -> str:
    """Shard ``index`` -> its stem ``NNNNN``."""
    return f"{index:05d}"


def shard_paths(set_dir: Path, index: int) -> tuple[Path, Path, Path]:
    """The tar, parquet and stats paths of shard ``index`` of ``set_dir``."""
    n = shard_name(index)
    return (set_dir / f"{n}{TAR_SUFFIX}", set_dir / f"{n}{INDEX_SUFFIX}",
            set_dir / f"{n}{STATS_SUFFIX}")


def is_shard_tar(name: str) -> bool:
    """True for a shard tar's file or object name (``NNNNN.tar``)."""
    return SHARD_RE.match(name) is not None


def stem_of(tar_name: str) -> str:
    """``NNNNN.tar`` -> ``NNNNN``."""
    return tar_name[: -len(TAR_SUFFIX)]


def stats_name(tar_name: str) -> str:
    """``NNNNN.tar`` -> ``NNNNN_stats.json`` (its existence marks the shard finished)."""
    return stem_of(tar_name) + STATS_SUFFIX


def index_name(tar_name: str) -> str:
    """``NNNNN.tar`` -> ``NNNNN.parquet``."""
    return stem_of(tar_name) + INDEX_SUFFIX


def stats_path(tar: Path) -> Path:
    """The stats file beside a local shard tar."""
    return tar.with_name(stats_name(tar.name))


def finished_names(names) -> list[str]:
    """The shard tars among ``names`` (of one folder or prefix) whose stats file is among them,
    sorted."""
    names = set(names)
    return sorted(n for n in names if is_shard_tar(n) and stats_name(n) in names)


def upload_order(tar_name: str) -> tuple[str, str, str]:
    """The order a shard's files are put anywhere: tar, parquet, stats LAST."""
    return tar_name, index_name(tar_name), stats_name(tar_name)


def split_member(name: str) -> tuple[str | None, str | None]:
    """``bear/00004.00.jpg`` -> (``bear/00004``, ``00.jpg``): key = path up to the first dot of
    the file name (the WebDataset rule)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem or not ext:
        return None, None
    return (f"{head}/{stem}" if head else stem), ext.lower()


def unsafe_member(name: str) -> bool:
    """An absolute path or a ``..`` component: a member that would escape the shard if it were
    ever extracted. The loader never extracts, but such a shard is not one we wrote."""
    return name.startswith("/") or ".." in name.split("/")


def read_stats(path: Path) -> dict | None:
    """A shard's stats; None when the file is missing (the shard is not finished). An unreadable
    stats file is an error naming the fix."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise FileProblem(path, f"unreadable shard stats ({e})", "delete it to rebuild the shard") from e
