"""The shard dataset: a webdataset ``DataPipeline`` of webdataset's own stages, seeded per
(seed, epoch, rank, worker): this worker's shards (split by rank, then worker), a resampled shard
stream (``wds.ResampledShards``), the tar reader, ``wds.shuffle``, decode + augment
(``wds.map``), ``wds.batched`` or a stage that decodes straight into a shared-memory batch."""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import torch
import webdataset as wds
from pipeline.loading.device_decode import collate_bytes, split_sample
from pipeline.loading.process import count_failure, flip_only, process_sample

from pipeline.core.seeds import seed_int
from pipeline.lake.listing import (assign_shards, check_shard_counts, ShardSet, split_by_rank,
                                   split_by_worker)
from pipeline.loading.augment import AugmentConfig
from pipeline.loading.batching import alloc, collate, in_worker
from pipeline.loading.bufferpool import BufferPool, POOL_KEY
from pipeline.loading.decode import Kind, peek_shape
from pipeline.loading.readstats import ReadStats
from pipeline.loading.tarsamples import read_tar


# ----------------------------------------------------------------------------------------------
# the pipeline


class ShardDataset(wds.DataPipeline):
    """An IterableDataset (a webdataset ``DataPipeline``) of decoded, augmented samples, or of
    batches when ``batch_size`` is set. Built by :func:`make_dataset`; see the module docstring.

    In each DataLoader worker the pipeline is: this worker's shards (split by rank, then worker)
    -> resampled shard stream -> tar reader -> shuffle buffer of raw samples -> decode ->
    augment -> (batch). Extra stages can be appended with ``.append(stage)`` / ``.compose(...)``.
    Batches are made one of three ways: ``decode_device`` set (JPEG bytes, decoded by the trainer,
    :mod:`pipeline.loading.device_decode`); a flip-only config (decoded straight into the batch,
    into a ``pool`` slot, :class:`BufferPool`, when one is given and this runs in a worker); else
    ``wds.map`` + ``wds.batched``.
    """

    def __init__(self, sets: Sequence[ShardSet], *, kind: Kind | None, augment: AugmentConfig,
                 seed: int, rank: int, world_size: int, resampled: bool = True,
                 shuffle_buffer: int = 100, merge_objects: bool = False, masks: bool = True,
                 weights: Sequence[float] | None = None, batch_size: int | None = None,
                 partial: bool = False, nodesplitter: Callable = split_by_rank,
                 workersplitter: Callable = split_by_worker, pool: BufferPool | None = None,
                 decode_device: str | None = None):
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
        self.pool = pool  # reused batch buffers (pipeline/loading/bufferpool.py), or None
        self.decode_device = decode_device  # JPEG bytes to the trainer's device decoder, or None
        self._reported: dict[str, int] = {}  # what batches have reported of self.stats so far

    def set_epoch(self, epoch: int) -> None:
        """Change the seed material of the next iteration (fresh shard order and augmentation)."""
        self.epoch = int(epoch)

    def worker_shards(self, worker: int = 0, num_workers: int = 1) -> list[list[str]]:
        """The shards of each set that (this rank, ``worker``) reads: its own split of the set
        (:func:`assign_shards`); resampled, a set with fewer shards than the
        ``world_size x num_workers`` streams is shared whole by every stream, each drawing with
        its own seed (any lake trains on any cluster shape)."""
        streams = self.world_size * max(1, num_workers)
        return [list(s.shards) if self.resampled and len(s.shards) < streams
                else assign_shards(s.shards, self.rank, self.world_size, worker, num_workers,
                                   self.nodesplitter, self.workersplitter) for s in self.sets]

    def _start(self):
        """Per-iteration state of this worker: its shards, the shard/shuffle seed, the augmentation
        generator."""
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if not self.resampled:   # each shard read once: every stream needs shards of its own
            check_shard_counts(self.sets, self.world_size, num_workers)
        parts = self.worker_shards(worker, num_workers)
        # seeds depend on (seed, epoch, rank, worker): an epoch replays exactly after a resume
        # with set_epoch. A persistent worker keeps its copy's epoch, so it counts repeats.
        self._repeat = self._repeat + 1 if self._seen_epoch == self.epoch else 0
        self._seen_epoch = self.epoch
        base = (self.seed, self.epoch, self._repeat, self.rank, worker)
        gen = torch.Generator().manual_seed(seed_int("augment", *base))
        return worker, parts, seed_int("shards", *base), gen

    def _shard_source(self, parts: list[list[str]], seed: int):
        """This worker's shard stream, ``{"url": ...}`` items: webdataset's ``ResampledShards``
        (resampled, uniform over shards ~ by sample count) or ``SimpleShardList`` (one seeded
        pass); with per-set ``weights``, :func:`weighted_shards` (webdataset has no seeded
        weighted shard sampler: ``RandomMix`` mixes sample streams with the global ``random``)."""
        urls = [u for p in parts for u in p]
        if not self.resampled:
            return wds.SimpleShardList(urls, seed=seed)
        if self.weights is None:
            return wds.ResampledShards(urls, worker_seed=lambda: seed, deterministic=True)
        live = [(float(self.weights[i]), p) for i, p in enumerate(parts) if p]
        return lambda: weighted_shards(live, random.Random(seed))

    def _guard(self, worker: int, failures: int, n_parts: int) -> None:
        if self.resampled and failures > max(50, 10 * n_parts):
            raise RuntimeError(
                f"rank {self.rank} worker {worker}: nothing usable in the last {failures} "
                f"samples/shards of {[s.name for s in self.sets]} (kind={self.kind!r}); read "
                f"stats: {self.stats.as_dict()}. Are these shards of kind {self.kind!r}?")

    def _raw_stages(self, worker: int, parts: list[list[str]], seed: int) -> list:
        """Source + tar reader + shuffle buffer: the raw samples of this worker, as stages of a
        webdataset pipeline."""
        n_parts = sum(len(p) for p in parts)
        stats = self.stats

        def tar_samples(src: Iterator[dict[str, str]]) -> Iterator[dict[str, Any]]:
            # our reader, not wds.tarfile_to_samples: 3.5-4.8x its byte rate on the DAVIS shards
            # (benchmarks/micro_claims.py prints it); never reads or unpickles members the
            # loader does not decode; counted skips
            empty = 0
            for item in src:
                got = 0
                for raw in read_tar(item["url"], stats):
                    got += 1
                    yield raw
                empty = 0 if got else empty + 1
                self._guard(worker, empty, n_parts)

        stages = [self._shard_source(parts, seed), tar_samples]
        if self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                                      rng=random.Random(seed_int("shuffle", seed))))
        return stages

    def _decoder(self, worker: int, n_parts: int, gen: torch.Generator) -> Callable:
        """``raw -> sample`` for ``wds.map``: None (dropped by ``map``) for a counted failure."""
        failures = 0

        def decode(raw: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal failures
            s = process_sample(raw, self.kind, self.merge_objects, self.augment, gen, self.stats,
                               masks=self.masks)
            failures = failures + 1 if s is None else 0
            if s is None:
                self._guard(worker, failures, n_parts)
            return s

        return decode

    def _splitter(self, worker: int, n_parts: int, gen: torch.Generator) -> Callable:
        """``raw -> split sample`` (JPEG bytes kept, :mod:`pipeline.loading.device_decode`) for
        ``wds.map``: None for a counted failure."""
        failures = 0

        def split(raw: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal failures
            if raw.get("__bad__"):
                return None
            try:
                s = split_sample(raw, self.augment, gen, masks=self.masks,
                                 merge_objects=self.merge_objects)
            except (ValueError, RuntimeError, OSError) as exn:
                count_failure(self.stats, raw, exn)
                failures += 1
                self._guard(worker, failures, n_parts)
                return None
            failures = 0
            self.stats.samples += 1
            return s

        return split

    def _collate_bytes(self, group: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_bytes(group)
        batch["stats"] = self.stats.delta_since(self._reported)
        return batch

    def _decode_into_batches(self, worker: int, n_parts: int, gen: torch.Generator) -> Callable:
        """A stage ``raw samples -> batches`` for a flip-only config: the pixels are decoded
        straight into the batch tensor (in shared memory inside a worker), so nothing is copied
        again, which ``wds.map`` + ``wds.batched`` (decode, then collate) cannot do."""
        shared = in_worker()
        size = tuple(self.augment.size) if self.augment.size is not None else None

        pool = self.pool if shared else None

        def stage(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            group: list[dict[str, Any]] = []
            out, key, mask_buf = None, None, None
            failures = 0
            for raw in src:
                slot = None
                shape = peek_shape(raw, self.kind)
                if shape is not None and size is not None and shape[-3:-1] != size:
                    shape = None  # will be resized: no use decoding into the batch
                if out is None and shape is not None:
                    if pool is not None:  # reused buffers (pipeline/loading/bufferpool.py)
                        shapes = {"pixels": (self.batch_size,) + shape}
                        if self.masks:
                            shapes["mask"] = (self.batch_size,) + tuple(shape[-3:-1])
                        bufs, key = pool.take(worker, shapes)
                        out, mask_buf = bufs["pixels"], bufs.get("mask")
                    else:
                        out = alloc((self.batch_size,) + shape, shared=shared)
                if out is not None and shape == tuple(out.shape[1:]):
                    slot = out[len(group)]
                s = process_sample(raw, self.kind, self.merge_objects, self.augment, gen,
                                   self.stats, slot, self.masks)
                if s is None:
                    failures += 1
                    self._guard(worker, failures, n_parts)
                    continue
                failures = 0
                group.append(s)
                if len(group) == self.batch_size:
                    yield self._collate(group, shared, out, key, mask_buf)
                    group, out, key, mask_buf = [], None, None, None
            if group and self.partial:
                yield self._collate(group, shared, out, key, mask_buf)

        return stage

    def _collate(self, group, shared, out, key=None, mask_buf=None) -> dict[str, Any]:
        if out is not None:
            out = out[: len(group)]
            out = out.permute(0, 1, 4, 2, 3) if out.dim() == 5 else out.permute(0, 3, 1, 2)
        name = "frames" if "frames" in group[0] else "image"
        pooled = key is not None and all(s[name].data_ptr() == out[i].data_ptr()
                                         for i, s in enumerate(group))
        if key is not None and not pooled:  # not all decoded in place: the slot is not used
            self.pool.flags[key[:2]] = 0
            mask_buf = None
        batch = collate(group, shared=shared, out=out,
                        mask_into=mask_buf[: len(group)] if mask_buf is not None else None)
        if pooled:
            batch[POOL_KEY] = key           # the main process frees the slot when it is done
        batch["stats"] = self.stats.delta_since(self._reported)
        return batch

    def iterator1(self):
        """One iteration in this worker: a webdataset pipeline built with this iteration's seeds
        (source -> tar reader -> ``wds.shuffle`` -> ``wds.map(decode)`` -> ``wds.batched``, or
        the decode-into-batch stage), then any stages appended to this dataset."""
        worker, parts, seed, gen = self._start()
        n_parts = sum(len(p) for p in parts)
        stages = self._raw_stages(worker, parts, seed)
        if self.decode_device is not None:  # bytes for the trainer's device decoder
            stages.append(wds.map(self._splitter(worker, n_parts, gen)))
            if self.batch_size:
                stages.append(wds.batched(self.batch_size, partial=self.partial,
                                          collation_fn=self._collate_bytes))
        elif self.batch_size and flip_only(self.augment):
            stages.append(self._decode_into_batches(worker, n_parts, gen))
        else:
            stages.append(wds.map(self._decoder(worker, n_parts, gen)))
            if self.batch_size:
                shared = in_worker()
                stages.append(wds.batched(self.batch_size, partial=self.partial,
                                          collation_fn=lambda g: self._collate(g, shared, None)))
        source = iter(wds.DataPipeline(*stages))
        for stage in self.pipeline:
            source = self.invoke(stage, source)
        return source


def weighted_shards(live: list[tuple[float, list[str]]], rng: random.Random
                    ) -> Iterator[dict[str, str]]:
    """An endless ``{"url": ...}`` stream: a set drawn by weight, then one of its shards."""
    weights = [w for w, _ in live]
    while True:
        p = rng.choices(live, weights=weights)[0][1]
        yield {"url": p[rng.randrange(len(p))]}
