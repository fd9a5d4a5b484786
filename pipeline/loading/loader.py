"""WebDataset loaders for the data lake: the pipeline from shard sets to decoded, augmented batches.

Reading rules (docs/architecture.md); each lives in a module of its own, re-exported here:

* **Finished shards only.** A shard set is a folder ``shards/<dataset>/<split>/``; its shards are
  the ``NNNNN.tar`` files whose ``NNNNN_stats.json`` exists (:func:`list_shards`, in
  :mod:`pipeline.lake.listing`). Several sets can be mixed
  (``["shards/msra10k/train", "shards/voc2012/train"]``).
* **No unpickling, ever.** Tar members are read by our own reader (:func:`read_tar`, in
  :mod:`pipeline.loading.tarsamples`) and only three kinds are decoded, by our own code
  (:func:`decode_sample`, in :mod:`pipeline.loading.decode`): ``*.jpg`` (libjpeg-turbo, RGB:
  simplejpeg into the batch, torchvision ``decode_jpeg`` otherwise; same pixels), ``mask.png``
  (the one mask reader, ``pipeline/core/mask_png.py``: stored values, palette ids are kept)
  and ``json`` (``json.loads``). Any other member (``.pyd``, ``.pickle``, ``.pth``, ``.npy``, ...)
  is not even read: it is counted in ``ignored_members``.
* **Masks.** ``mask_format`` ``binary`` (0/255 sources) -> {0, 1}; ``palette`` / ``voc`` / null ->
  ids as stored (0 background, 1..N objects, 255 void). ``merge_objects=True`` turns every id
  1..254 into 1 and keeps 255 (SSB pretraining on one merged foreground, as the authors did).
  Padding made by the augmentation is ``AugmentConfig.mask_fill`` (255 = ignore by default).
* **DDP.** Each set's shards are split by global rank (``shards[rank::world_size]``,
  :func:`split_by_rank`) and then by DataLoader worker (:func:`split_by_worker`); both splitters
  are passed explicitly and can be replaced. Every worker then draws shards *with replacement*
  from its own part (resampling, seeded by ``(seed, epoch, rank, worker)``), so the stream never
  ends, and :func:`make_loader` cuts it with ``WebLoader(...).with_epoch(epoch_batches)``: every
  rank gets exactly ``epoch_batches`` batches and DDP never hangs on an uneven last batch.
  **Any lake on any cluster shape**: a set with fewer shards than the ``world_size x
  num_workers`` streams is not split; every stream draws from all of its shards, each with its
  own seed, so the sampling is still a function of ``(seed, epoch, rank, worker)`` and a resume
  stays exact. In exact mode (``make_dataset(resampled=False)``: each of a stream's shards read
  once) a stream needs shards of its own, and such a set is refused with a ``ValueError``
  (:class:`NotEnoughShardsError`) that says how many there are, how many are needed and the fix.
  Rank and world size come from the arguments, else ``RANK``/``WORLD_SIZE`` (torchrun), else an
  initialised ``torch.distributed``, else 0/1.
* **Corrupt data is skipped, warned about and counted.** A member that fails to decode (truncated
  JPEG, bad PNG, bad JSON), a sample missing a member, or a truncated tar is skipped with a
  logged warning naming the shard and the key. Counts live in a :class:`ReadStats`
  (:mod:`pipeline.loading.readstats`):
  - each pipeline (each DataLoader worker process) keeps its own ``dataset.stats``;
  - every batch carries ``batch["stats"]``: what its worker counted since its previous batch (a
    plain dict: counts plus up to 20 ``events`` ``(reason, shard, key, message)``);
  - :class:`ShardLoader` (what :func:`make_loader` returns) adds those up in the main process in
    ``loader.stats`` (a :class:`ReadStats`), e.g. ``loader.stats.corrupt`` after an epoch.
  Problems a worker meets after its last delivered batch are in no batch (they are still warned).

Batches (dicts, made in the workers by :func:`collate` of :mod:`pipeline.loading.batching`, in
shared memory there so the hand-over copies nothing):
  clips:  ``frames`` uint8 [B, T, 3, H, W] (oldest frame first, last = frame t),
  images: ``image`` uint8 [B, 3, H, W],
  ``mask`` uint8 [B, H, W] when the samples have masks (``has_mask`` bool [B] is added, and missing
  masks are all-255, only when a batch mixes samples with and without),
  ``key`` list[str], ``meta`` list[dict] (the sample's json + ``shard`` + ``augment``: the drawn
  parameters, None without augmentation), ``stats`` dict (see above).
Batches stay uint8: normalise on the device with :func:`pipeline.loading.augment.to_float`.
Memory layout: ``frames``/``image`` have the shapes above but, except after a rotation/zoom,
channels-last strides (a permuted view of [B, T, H, W, 3] / [B, H, W, 3], which is what the
JPEG decoder writes: no transposing copy, ~30% of the decode time saved). Torch ops accept any
layout; merge dims with ``.reshape`` (not ``.view``), or call ``.contiguous()``.

Speed: with a flip-only config (``hflip``, and ``size`` equal to the source size or None) the
frames are decoded straight into the batch tensor (simplejpeg writes into a given buffer;
torchvision's decoder cannot) and mirrored there in place, so the loader runs at ~0.9x of pure
decoding into a reused buffer, with 2 DataLoader workers too (benchmarks/loader_throughput.py).

For inspection and tests without DDP or DataLoader: :func:`iter_samples` yields decoded samples
of every finished shard in order, once.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import webdataset as wds

from pipeline.lake.listing import (NotEnoughShardsError, ShardSet, assign_shards, check_shard_counts,
                                   dist_info, list_shards, shard_sets, split_by_rank,
                                   split_by_worker)
from pipeline.loading.augment import AugmentConfig, resolve_augment, to_float
from pipeline.loading.batching import collate
from pipeline.loading.decode import Kind, decode_sample
from pipeline.loading.process import process_sample
from pipeline.loading.readstats import ReadStats
from pipeline.loading.tarsamples import read_tar
from pipeline.lake.contract import split_member
from pipeline.core.seeds import seed_int
from pipeline.loading.bufferpool import BufferPool, POOL_KEY, PoolWatcher
from pipeline.loading.dataset import ShardDataset
from pipeline.loading.device_decode import check_config, decode_batch

__all__ = [
    "NotEnoughShardsError",
    "ReadStats",
    "ShardSet",
    "ShardDataset",
    "ShardLoader",
    "list_shards",
    "shard_sets",
    "split_by_rank",
    "split_by_worker",
    "assign_shards",
    "check_shard_counts",
    "dist_info",
    "read_tar",
    "split_member",
    "decode_sample",
    "iter_samples",
    "make_dataset",
    "make_loader",
    "collate",
    "to_float",
]


def make_dataset(urls_or_dir: "str | os.PathLike | Sequence[str | os.PathLike]", *,
                 kind: Kind = "clip", augment: "AugmentConfig | str | Mapping | None" = None,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 num_workers: int | None = None, resampled: bool = True,
                 shuffle_buffer: int = 100, merge_objects: bool = False, masks: bool = True,
                 weights: Sequence[float] | None = None, batch_size: int | None = None,
                 partial: bool = False, nodesplitter: Callable = split_by_rank,
                 workersplitter: Callable = split_by_worker, pool: BufferPool | None = None,
                 decode_device: str | None = None) -> ShardDataset:
    """A :class:`ShardDataset` over one or more shard sets (folders, or tar paths).

    ``kind``: "clip" or "image" (samples of the other kind are skipped and counted).
    ``augment``: an :class:`AugmentConfig`, a preset name, a mapping, or None (nothing).
    ``seed``: with rank, worker and epoch, seeds the shard draws and the augmentation.
    ``rank``/``world_size``: default from the environment (torchrun) or torch.distributed.
    ``num_workers``: when given, the shard-count check (exact mode) runs now rather than in the
    workers.
    ``resampled``: draw shards with replacement for ever (for DDP training; cut the stream with
    ``with_epoch``): any number of shards serves any number of ranks and workers (a set with
    fewer shards than streams is shared by all of them, each with its own seed). False (exact
    mode) reads this rank/worker's own shards once each, in a seeded order, and a set with fewer
    shards than ``world_size x num_workers`` is refused (:class:`NotEnoughShardsError`).
    ``shuffle_buffer``: raw (undecoded) samples mixed before decoding (memory ~ that many raw
    samples per worker; 1 or 0 = off).
    ``merge_objects``: object ids 1..254 -> 1 (255 kept); ``masks=False``: masks are not decoded
    (the TCB pretraining phase needs frames only; saves the PNG decode, ~15% of a 854x480 clip).
    ``weights``: per-set sampling weights; default uniform over all shards (~ by sample count).
    ``batch_size``: collate in the pipeline (what :func:`make_loader` does); ``partial`` keeps a
    last short batch (only meaningful when ``resampled=False``).
    ``pool``: batch buffers the DataLoader workers reuse (:class:`BufferPool`); ``decode_device``:
    workers send JPEG bytes for that device to decode (both: see :func:`make_loader`).
    """
    sets = shard_sets(urls_or_dir)
    rank, world_size = dist_info(rank, world_size)
    if num_workers is not None and not resampled:
        check_shard_counts(sets, world_size, num_workers)
    if kind not in ("clip", "image"):
        raise ValueError(f"kind must be 'clip' or 'image', not {kind!r}")
    return ShardDataset(sets, kind=kind, augment=resolve_augment(augment), seed=seed, rank=rank,
                        world_size=world_size, resampled=resampled, shuffle_buffer=shuffle_buffer,
                        merge_objects=merge_objects, masks=masks, weights=weights,
                        batch_size=batch_size, partial=partial, nodesplitter=nodesplitter,
                        workersplitter=workersplitter, pool=pool, decode_device=decode_device)


class ShardLoader(wds.WebLoader):
    """``wds.WebLoader`` over a batched :class:`ShardDataset`, with ``stats`` (a :class:`ReadStats`
    summed from the batches' ``stats`` in this process) and ``set_epoch``. Each new iteration
    (epoch) re-seeds the workers' shard draws and augmentation."""

    def __init__(self, dataset: ShardDataset, **loader_kwargs: Any):
        super().__init__(dataset, batch_size=None, **loader_kwargs)
        self.dataset = dataset
        self.stats = ReadStats()
        self.epoch_batches: int | None = None
        self._started = False
        self._explicit_epoch = False
        self.pool_watcher = PoolWatcher(dataset.pool) if dataset.pool is not None else None

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration (seeds its shard draws and augmentation, so a resumed
        run replays it exactly). Without calls, iterations are epochs 0, 1, 2, ..."""
        self.dataset.set_epoch(epoch)
        self._explicit_epoch = True

    def __iter__(self):
        # runs at the first next(), before the DataLoader starts (and copies the dataset into) its
        # workers: each epoch gets fresh shard draws and augmentation, reproducibly
        if self._started and not self._explicit_epoch:
            self.dataset.set_epoch(self.dataset.epoch + 1)
        self._explicit_epoch = False
        self._started = True
        watcher = self.pool_watcher
        device = self.dataset.decode_device
        for batch in super().__iter__():
            st = batch.get("stats")
            if st:
                self.stats.add(st)
            if device is not None:  # JPEG bytes: decoded here, on the trainer's device
                batch = decode_batch(batch, device, self.dataset.augment, self.stats)
            key = batch.pop(POOL_KEY, None)
            if watcher is not None:
                watcher.receive(key, [t for t in (batch.get("frames"), batch.get("image"),
                                                  batch.get("mask")) if t is not None])
                watcher.poll()  # the batches this process no longer holds free their slots
            yield batch

    def with_epoch(self, nsamples: int = -1, nbatches: int = -1) -> "ShardLoader":
        super().with_epoch(nsamples, nbatches)
        self.epoch_batches = max(nsamples, nbatches)
        return self

    def __len__(self) -> int:
        if self.epoch_batches is None or self.epoch_batches < 0:
            raise TypeError("this loader has no epoch length (make_loader(epoch_batches=None))")
        return self.epoch_batches


def make_loader(shard_dirs: "str | os.PathLike | Sequence[str | os.PathLike]", batch_size: int,
                num_workers: int = 2, epoch_batches: int | None = None, *,
                rank: int | None = None, world_size: int | None = None, seed: int = 0,
                augment: "AugmentConfig | str | Mapping | None" = None, kind: Kind = "clip",
                shuffle_buffer: int = 100, merge_objects: bool = False, masks: bool = True,
                weights: Sequence[float] | None = None, pin_memory: bool = False,
                persistent_workers: bool = False, prefetch_factor: int | None = None,
                multiprocessing_context: Any = None, buffer_slots: int | None = None,
                decode_device: str | None = None) -> ShardLoader:
    """A DDP-safe loader: exactly ``epoch_batches`` batches of ``batch_size`` per rank and epoch.

    Shards are resampled (see :func:`make_dataset`; any shard count serves any number of ranks
    and workers), batched inside the workers, and the loader is cut with
    ``.with_epoch(epoch_batches)`` (``None``: never ends), so every rank gets the same number of
    batches.

    ``buffer_slots``: batch buffers each worker reuses (default ``prefetch_factor + 2``; 0 =
    a fresh shared-memory buffer per batch); a slot is written again only once no tensor of its
    last batch is left in this process (:mod:`pipeline.loading.bufferpool`).
    ``decode_device``: None decodes in the workers; a device (``"cuda"``, ``"cpu"``) makes the
    workers send JPEG bytes that this process decodes there, a batch at a time
    (:mod:`pipeline.loading.device_decode`; flip-only presets, clips).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if buffer_slots is None:
        buffer_slots = (prefetch_factor if prefetch_factor is not None else 2) + 2
    if decode_device is not None:
        check_config(resolve_augment(augment))
        if kind != "clip":
            raise ValueError("decode_device: only clip samples decode on the device (kind='clip')")
        buffer_slots = 0  # bytes are small: nothing to reuse
    # per worker: the batches in flight (prefetch_factor), the one held, one being built
    pool = BufferPool(num_workers, buffer_slots) if num_workers > 0 and buffer_slots > 0 else None
    ds = make_dataset(shard_dirs, kind=kind, augment=augment, seed=seed, rank=rank,
                      world_size=world_size, num_workers=num_workers, resampled=True,
                      shuffle_buffer=shuffle_buffer, merge_objects=merge_objects, masks=masks,
                      weights=weights, batch_size=batch_size, pool=pool,
                      decode_device=decode_device)
    kw: dict[str, Any] = dict(num_workers=num_workers, pin_memory=pin_memory)
    if num_workers > 0:
        kw["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kw["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kw["multiprocessing_context"] = multiprocessing_context
    loader = ShardLoader(ds, **kw)
    if epoch_batches is not None:
        if epoch_batches < 1:
            raise ValueError(f"epoch_batches must be >= 1, got {epoch_batches}")
        loader = loader.with_epoch(epoch_batches)
    return loader


def iter_samples(sources: "str | os.PathLike | Sequence[str | os.PathLike]", *,
                 kind: Kind | None = None, augment: "AugmentConfig | str | Mapping | None" = None,
                 merge_objects: bool = False, masks: bool = True, seed: int = 0,
                 stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every decoded sample of the finished shards of ``sources`` (folders or tar paths), in shard
    and tar order, once; no DDP, no workers, no shuffling. ``kind=None`` accepts both kinds.
    Corrupt samples are skipped, warned about and counted in ``stats`` (pass a :class:`ReadStats`
    to read the counts afterwards)."""
    stats = stats if stats is not None else ReadStats()
    cfg = resolve_augment(augment)
    gen = torch.Generator().manual_seed(seed_int("iter_samples", seed))
    for s in shard_sets(sources):
        for url in s.shards:
            for raw in read_tar(url, stats):
                sample = process_sample(raw, kind, merge_objects, cfg, gen, stats, masks=masks)
                if sample is not None:
                    yield sample
