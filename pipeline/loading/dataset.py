"""The shard dataset (a webdataset ``DataPipeline``): per DataLoader worker its shards (split by
rank, then worker), a seeded resampled shard stream, the tar reader, a shuffle buffer, decode and
augment, optionally batched straight into shared memory."""

from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Iterator, Sequence

import torch
import webdataset as wds
from pipeline.loading.process import flip_only, process_sample

from pipeline.lake.listing import (assign_shards, check_shard_counts, ShardSet, split_by_rank,
                                   split_by_worker)
from pipeline.loading.augment import AugmentConfig
from pipeline.loading.batching import alloc, collate, in_worker
from pipeline.loading.decode import Kind, peek_shape
from pipeline.loading.readstats import ReadStats
from pipeline.loading.tarsamples import read_tar


# ----------------------------------------------------------------------------------------------
# the pipeline


def seed_int(*parts: Any) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class ShardDataset(wds.DataPipeline):
    """An IterableDataset (a webdataset ``DataPipeline``) of decoded, augmented samples, or of
    batches when ``batch_size`` is set. Built by :func:`make_dataset`; see the module docstring.

    In each DataLoader worker the pipeline is: this worker's shards (split by rank, then worker)
    -> resampled shard stream -> tar reader -> shuffle buffer of raw samples -> decode ->
    augment -> (batch). Extra stages can be appended with ``.append(stage)`` / ``.compose(...)``.
    """

    def __init__(self, sets: Sequence[ShardSet], *, kind: Kind | None, augment: AugmentConfig,
                 seed: int, rank: int, world_size: int, resampled: bool = True,
                 shuffle_buffer: int = 100, merge_objects: bool = False, masks: bool = True,
                 weights: Sequence[float] | None = None, batch_size: int | None = None,
                 partial: bool = False, nodesplitter: Callable = split_by_rank,
                 workersplitter: Callable = split_by_worker):
        super().__init__()
        if weights is not None and len(weights) != len(sets):
            raise ValueError(f"{len(weights)} weights for {len(sets)} shard sets")
        self.sets = list(sets)
        self.kind = kind
        self.augment = augment
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.resampled = resampled
        self.shuffle_buffer = int(shuffle_buffer)
        self.merge_objects = merge_objects
        self.masks = masks
        self.weights = list(weights) if weights is not None else None
        self.batch_size = batch_size
        self.partial = partial
        self.nodesplitter = nodesplitter
        self.workersplitter = workersplitter
        self.epoch = 0          # set by set_epoch (or by ShardLoader per iteration), main process
        self._seen_epoch: int | None = None
        self._repeat = 0        # iterations at an unchanged epoch (persistent workers)
        self.stats = ReadStats()
        self._reported: dict[str, int] = {}  # what batches have reported of self.stats so far

    def set_epoch(self, epoch: int) -> None:
        """Change the seed material of the next iteration (fresh shard order and augmentation)."""
        self.epoch = int(epoch)

    def worker_shards(self, worker: int = 0, num_workers: int = 1) -> list[list[str]]:
        """The shards of each set that (this rank, ``worker``) reads."""
        return [assign_shards(s.shards, self.rank, self.world_size, worker, num_workers,
                              self.nodesplitter, self.workersplitter) for s in self.sets]

    def _urls(self, parts: list[list[str]], rng: random.Random) -> Iterator[str]:
        if not self.resampled:
            urls = [u for p in parts for u in p]
            rng.shuffle(urls)
            yield from urls
            return
        live = [(i, p) for i, p in enumerate(parts) if p]
        if self.weights is None:
            pool = [u for _, p in live for u in p]  # uniform over shards ~ by sample count
            while True:
                yield pool[rng.randrange(len(pool))]
        w = [float(self.weights[i]) for i, _ in live]
        while True:
            p = rng.choices(live, weights=w)[0][1]
            yield p[rng.randrange(len(p))]

    def _start(self):
        """Per-iteration state of this worker: its shards and seeded generators."""
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        check_shard_counts(self.sets, self.world_size, num_workers)
        parts = self.worker_shards(worker, num_workers)
        # seeds depend on (seed, epoch, rank, worker): an epoch replays exactly after a resume
        # with set_epoch. A persistent worker keeps its copy's epoch, so it counts repeats.
        self._repeat = self._repeat + 1 if self._seen_epoch == self.epoch else 0
        self._seen_epoch = self.epoch
        base = (self.seed, self.epoch, self._repeat, self.rank, worker)
        rng = random.Random(seed_int("shards", *base))
        gen = torch.Generator().manual_seed(seed_int("augment", *base))
        return worker, parts, rng, gen

    def _guard(self, worker: int, failures: int, n_parts: int) -> None:
        if self.resampled and failures > max(50, 10 * n_parts):
            raise RuntimeError(
                f"rank {self.rank} worker {worker}: nothing usable in the last {failures} "
                f"samples/shards of {[s.name for s in self.sets]} (kind={self.kind!r}); read "
                f"stats: {self.stats.as_dict()}. Are these shards of kind {self.kind!r}?")

    def _raw(self, worker: int, parts: list[list[str]], rng: random.Random
             ) -> Iterator[dict[str, Any]]:
        """Raw samples of this worker's shard stream, through the shuffle buffer."""
        n_parts = sum(len(p) for p in parts)
        empty = 0
        buf: list[dict[str, Any]] = []
        for url in self._urls(parts, rng):
            got = 0
            for raw in read_tar(url, self.stats):
                got += 1
                if self.shuffle_buffer > 1:
                    if len(buf) < self.shuffle_buffer:
                        buf.append(raw)
                        continue
                    i = rng.randrange(len(buf))
                    buf[i], raw = raw, buf[i]
                yield raw
            empty = 0 if got else empty + 1
            self._guard(worker, empty, n_parts)
        rng.shuffle(buf)
        yield from buf

    def _samples(self) -> Iterator[dict[str, Any]]:
        worker, parts, rng, gen = self._start()
        n_parts = sum(len(p) for p in parts)
        failures = 0
        for raw in self._raw(worker, parts, rng):
            s = process_sample(raw, self.kind, self.merge_objects, self.augment, gen, self.stats,
                         masks=self.masks)
            if s is None:
                failures += 1
                self._guard(worker, failures, n_parts)
                continue
            failures = 0
            yield s

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Batches; with a flip-only config the pixels are decoded straight into the batch
        tensor (in shared memory inside a worker), so nothing is copied again."""
        worker, parts, rng, gen = self._start()
        n_parts = sum(len(p) for p in parts)
        shared = in_worker()
        fast = flip_only(self.augment)
        size = tuple(self.augment.size) if self.augment.size is not None else None
        group: list[dict[str, Any]] = []
        out = None
        failures = 0
        for raw in self._raw(worker, parts, rng):
            slot = None
            if fast:
                shape = peek_shape(raw, self.kind)
                if shape is not None and size is not None and shape[-3:-1] != size:
                    shape = None  # will be resized: no use decoding into the batch
                if out is None and shape is not None:
                    out = alloc((self.batch_size,) + shape, shared=shared)
                if out is not None and shape == tuple(out.shape[1:]):
                    slot = out[len(group)]
            s = process_sample(raw, self.kind, self.merge_objects, self.augment, gen, self.stats, slot,
                         self.masks)
            if s is None:
                failures += 1
                self._guard(worker, failures, n_parts)
                continue
            failures = 0
            group.append(s)
            if len(group) == self.batch_size:
                yield self._collate(group, shared, out)
                group, out = [], None
        if group and self.partial:
            yield self._collate(group, shared, out)

    def _collate(self, group, shared, out) -> dict[str, Any]:
        if out is not None:
            out = out[: len(group)]
            out = out.permute(0, 1, 4, 2, 3) if out.dim() == 5 else out.permute(0, 3, 1, 2)
        batch = collate(group, shared=shared, out=out)
        batch["stats"] = self.stats.delta_since(self._reported)
        return batch

    def iterator1(self):
        source = self._batches() if self.batch_size else self._samples()
        for stage in self.pipeline:
            source = self.invoke(stage, source)
        return source
