"""Which shards a reader reads: the finished shards of a set, split over ranks and workers.

A shard set is a folder ``shards/<dataset>/<split>/``; its finished shards are the ``NNNNN.tar``
files whose ``NNNNN_stats.json`` exists (:func:`finished_shards`; the stats file is written last,
so readers ignore the others). The WebDataset loader, the FFCV store and the catalog all list
shards here.

The loader splits each set by global rank (``shards[rank::world_size]``, :func:`split_by_rank`)
and then by DataLoader worker (:func:`split_by_worker`); a set with fewer shards than
``world_size x num_workers`` is refused (:func:`check_shard_counts`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

from pipeline.lake import store as objectstore
from pipeline.lake.contract import is_shard_tar, stats_path

class NotEnoughShardsError(ValueError):
    """A shard set has fewer shards than ranks x workers."""


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The finished shards of one set (one folder, or an explicit list of tar files)."""

    name: str
    shards: tuple[str, ...]
    samples: int | None = None  # from the stats files, when they say


def _read_count(stats: Path) -> int | None:
    try:
        return int(json.loads(stats.read_text())["count"])
    except Exception:
        return None


def _total_count(tars: Sequence[Path]) -> int | None:
    """Samples in these shards by their stats files; None when one of them does not say."""
    counts = [_read_count(stats_path(t)) for t in tars]
    return sum(counts) if all(c is not None for c in counts) else None


def finished_shards(set_dir: str | os.PathLike) -> list[Path]:
    """The finished shards of a set folder, sorted: ``NNNNN.tar`` with its ``NNNNN_stats.json``
    (none when the folder does not exist)."""
    return sorted(p for p in Path(set_dir).glob("*.tar")
                  if is_shard_tar(p.name) and p.is_file() and stats_path(p).is_file())


def list_shards(shard_dir: str | os.PathLike) -> list[str]:
    """:func:`finished_shards` as strings; raises when the folder does not exist."""
    if not Path(shard_dir).is_dir():
        raise FileNotFoundError(f"shard folder {shard_dir} does not exist")
    return [str(p) for p in finished_shards(shard_dir)]


def shard_sets(sources: "str | os.PathLike | Sequence[str | os.PathLike]") -> list[ShardSet]:
    """Resolve folders and/or tar paths to shard sets.

    A folder is one set; tar files given directly form one set together (unfinished ones, without
    their stats file, are dropped with a warning). An ``s3://bucket/prefix/<dataset>/<split>``
    URL is one set too (its finished shards by :func:`pipeline.lake.store.list_finished`;
    shards are then ``s3://`` URLs, split over ranks and workers like paths); ``s3://`` tar URLs
    given directly form one set like local tars. Raises when a set has no finished shard.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sets: list[ShardSet] = []
    loose: list[Path] = []
    loose_s3: list[str] = []
    for src in sources:
        if objectstore.is_s3(src):  # s3://bucket/prefix/<dataset>/<split>, or one tar there
            url = objectstore.normalize(src).rstrip("/")
            if url.endswith(".tar"):
                loose_s3.append(url)
                continue
            shards = objectstore.list_finished(url)
            if not shards:
                raise FileNotFoundError(
                    f"shard set {url} has no finished shard (NNNNN.tar with NNNNN_stats.json "
                    "objects); upload it with launch/preprocess.py --out s3://..., or check the "
                    "URL (s3://<bucket>/<prefix>/<dataset>/<split>)")
            sets.append(ShardSet(url, tuple(shards), None))
            continue
        p = Path(src)
        if p.is_dir():
            shards = list_shards(p)
            if not shards:
                raise FileNotFoundError(
                    f"shard set {p} has no finished shard (NNNNN.tar with NNNNN_stats.json); "
                    "run launch/preprocess.py for it, or wait for it to finish")
            sets.append(ShardSet(str(p), tuple(shards), _total_count([Path(s) for s in shards])))
        elif p.suffix == ".tar":
            loose.append(p)
        else:
            raise FileNotFoundError(f"{p} is neither a shard folder nor a .tar shard")
    if loose:
        finished = [p for p in loose if p.is_file() and stats_path(p).is_file()]
        dropped = [str(p) for p in loose if p not in finished]
        if dropped:
            warnings.warn(f"ignoring unfinished or missing shards (no _stats.json): {dropped}",
                          stacklevel=2)
        if not finished:
            raise FileNotFoundError(f"none of the given shards is finished: {dropped}")
        sets.append(ShardSet("+".join(sorted({str(p.parent) for p in finished})),
                             tuple(str(p) for p in finished), _total_count(finished)))
    if loose_s3:
        listed: dict[str, set[str]] = {}
        for u in loose_s3:
            parent = u.rsplit("/", 1)[0]
            if parent not in listed:
                listed[parent] = set(objectstore.list_finished(parent))
        finished_s3 = [u for u in loose_s3 if u in listed[u.rsplit("/", 1)[0]]]
        dropped_s3 = [u for u in loose_s3 if u not in finished_s3]
        if dropped_s3:
            warnings.warn(f"ignoring unfinished or missing shards (no _stats.json): {dropped_s3}",
                          stacklevel=2)
        if not finished_s3:
            raise FileNotFoundError(f"none of the given shards is finished: {dropped_s3}")
        sets.append(ShardSet("+".join(sorted(set(listed))), tuple(finished_s3), None))
    if not sets:
        raise ValueError("no shard folders or shards given")
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
        if s.samples:
            per_shard = (f" (it holds {s.samples} samples: --shard-max-count "
                         f"{max(1, s.samples // needed)} gives >= {needed} shards)")
        raise NotEnoughShardsError(
            f"shard set {s.name} has {n} finished shard(s), but world_size={world_size} x "
            f"num_workers={nw} = {needed} are needed: every rank and every DataLoader worker "
            f"reads shards of its own. Fix: re-shard it with a smaller --shard-max-count"
            f"{per_shard}, or {fix_workers}.")
