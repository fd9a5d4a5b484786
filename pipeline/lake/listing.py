"""Which shards a reader reads: the finished shards of a set, split over ranks and workers.

A shard set is a folder ``shards/<dataset>/<split>/``; its finished shards are the ``NNNNN.tar``
files whose ``NNNNN_stats.json`` exists (:func:`finished_shards`; the stats file is written last,
so readers ignore the others). The WebDataset loader, the FFCV store and the catalog all list
shards here.

The loader splits each set by global rank (``shards[rank::world_size]``, :func:`split_by_rank`)
and then by DataLoader worker (:func:`split_by_worker`). Resampled (training), a set with fewer
shards than ``world_size x num_workers`` is shared whole by every stream; read once (exact mode),
it is refused (:func:`check_shard_counts`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from pipeline.core.errors import InputMissing, PipelineError
from pipeline.lake import store as objectstore
from pipeline.lake.contract import stats_name
from pipeline.core.config import ConfigError

log = logging.getLogger(__name__)


class NotEnoughShardsError(PipelineError, ValueError):
    """A shard set has fewer shards than ranks x workers."""


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The finished shards of one set (one folder, or an explicit list of tar files)."""

    name: str
    shards: tuple[str, ...]


def _read_count(stats: str) -> int | None:
    try:
        return int(json.loads(objectstore.read_bytes(stats))["count"])
    except Exception:
        return None


def _total_count(shards: Sequence[str]) -> int | None:
    """Samples in these shards by their stats files; None when one of them does not say."""
    counts = [_read_count(stats_name(t)) for t in shards]
    return sum(counts) if all(c is not None for c in counts) else None


def _finished_in(shard: str, files: set[str]) -> bool:
    """The tar ``shard`` and its stats file are among ``files`` (of its folder or prefix)."""
    name = shard.rsplit("/", 1)[-1]
    return name in files and stats_name(name) in files


def finished_shards(set_dir: str | os.PathLike) -> list[Path]:
    """The finished shards of a set folder, sorted: ``NNNNN.tar`` with its ``NNNNN_stats.json``
    (none when the folder does not exist)."""
    return [Path(s) for s in objectstore.list_finished(set_dir)]


def list_shards(shard_dir: str | os.PathLike) -> list[str]:
    """:func:`finished_shards` as strings; raises when the folder does not exist."""
    if not Path(shard_dir).is_dir():
        raise InputMissing(f"shard folder {shard_dir} does not exist")
    return [str(p) for p in finished_shards(shard_dir)]


def shard_sets(sources: "str | os.PathLike | Sequence[str | os.PathLike]") -> list[ShardSet]:
    """Resolve folders and/or tar paths to shard sets.

    A folder, or an ``s3://bucket/prefix/<dataset>/<split>`` URL, is one set (its finished
    shards by :func:`pipeline.lake.store.list_finished`: paths, or ``s3://`` URLs, split over
    ranks and workers alike); tar files or URLs given directly form one set together
    (unfinished ones, without their stats file, are dropped with a warning). Raises when a set
    has no finished shard.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sets: list[ShardSet] = []
    loose: list[str] = []
    for src in sources:
        loc = objectstore.locate(src)
        if objectstore.is_set(loc):
            shards = objectstore.list_finished(loc)
            if not shards:
                raise InputMissing(
                    f"shard set {loc} has no finished shard (NNNNN.tar with NNNNN_stats.json)",
                    "write it with launch/preprocess.py (--out: a folder, or s3://<bucket>/"
                    "<prefix>, which it uploads to) and wait for it to finish, or check the "
                    "location (<lake>/<dataset>/<split>)")
            sets.append(ShardSet(str(loc), tuple(shards)))
        elif str(loc).endswith(".tar"):
            loose.append(str(loc))
        else:
            raise InputMissing(f"{loc} is neither a shard folder nor a .tar shard")
    if loose:
        listed: dict[str, set[str]] = {}  # each folder or prefix listed once
        for u in loose:
            folder = objectstore.parent(u)
            if folder not in listed:
                listed[folder] = set(objectstore.list_files(folder))
        finished = [u for u in loose if _finished_in(u, listed[objectstore.parent(u)])]
        dropped = [u for u in loose if u not in finished]
        if dropped:
            log.warning("ignoring unfinished or missing shards (no _stats.json): %s", dropped)
        if not finished:
            raise InputMissing(f"none of the given shards is finished: {dropped}")
        sets.append(ShardSet("+".join(sorted({objectstore.parent(u) for u in finished})),
                             tuple(finished)))
    if not sets:
        raise ConfigError("no shard folders or shards given", "name at least one shard set folder, tar file or s3:// prefix")
    return sets


def split_by_rank(shards: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The shards of global ``rank``: every ``world_size``-th one, starting at ``rank``."""
    return list(shards[rank::world_size])


def split_by_worker(shards: Sequence[str], worker: int, num_workers: int) -> list[str]:
    """The shards of DataLoader worker ``worker`` among a rank's shards."""
    return list(shards[worker::num_workers])


def assign_shards(shards: Sequence[str], rank: int, world_size: int, worker: int = 0,
                  num_workers: int = 1, nodesplitter=split_by_rank,
                  workersplitter=split_by_worker) -> list[str]:
    """The shards one (rank, worker) reads: ``workersplitter(nodesplitter(shards))``."""
    return workersplitter(nodesplitter(list(shards), rank, world_size), worker, max(1, num_workers))


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the arguments, else RANK/WORLD_SIZE, else torch.distributed, else 0/1."""
    if rank is None or world_size is None:
        env_r, env_w = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if env_r is not None and env_w is not None:
            r, w = int(env_r), int(env_w)
        else:
            # imported here: the catalog lists shards through this module and runs without torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                r, w = dist.get_rank(), dist.get_world_size()
            else:
                r, w = 0, 1
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    return int(rank), int(world_size)


def check_shard_counts(sets: Sequence[ShardSet], world_size: int, num_workers: int) -> None:
    """Raise :class:`NotEnoughShardsError` when a set cannot give every (rank, worker) a shard."""
    nw = max(1, num_workers)
    needed = world_size * nw
    for s in sets:
        n = len(s.shards)
        if n >= needed:
            continue
        max_workers = n // world_size
        fix_workers = (f"use num_workers <= {max_workers}" if max_workers >= 1
                       else f"run on at most {n} ranks")
        per_shard = ""
        samples = _total_count(s.shards)  # read here, on this error's path only
        if samples:
            per_shard = (f" (it holds {samples} samples: --shard-max-count "
                         f"{max(1, samples // needed)} gives >= {needed} shards)")
        raise NotEnoughShardsError(
            f"shard set {s.name} has {n} finished shard(s), but world_size={world_size} x "
            f"num_workers={nw} = {needed} are needed: every rank and every DataLoader worker "
            f"reads shards of its own. Fix: re-shard it with a smaller --shard-max-count"
            f"{per_shard}, or {fix_workers}.")
