"""Training data for the phases: loaders from ``data:`` configs, and a stream that knows its
position so a resumed run reads exactly the batches an uninterrupted one would have.

The loaders are DDP-safe (``pipeline/loading/loader.py``): every rank gets ``data.epoch_batches``
batches per epoch from its own shards; an epoch's draws and augmentation depend only on
``(seed, epoch, rank, worker)``. The position is ``(epoch, batch)``; resuming sets the epoch and
replays ``batch`` batches of it (at most one epoch: keep ``epoch_batches`` moderate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from pipeline.core.config import ConfigError
from pipeline.lake import store as objectstore
from pipeline.loading.augment import IMAGENET_MEAN, IMAGENET_STD
from pipeline.loading.loader import make_loader
from pipeline.train.config import DataConfig


def set_dirs(cfg: DataConfig) -> list[Path | str]:
    """The set folders under ``data.lake``; for ``data.lake: s3://bucket/prefix`` the set URLs
    (their finished shards are listed, and an empty set reported, by ``shard_sets``)."""
    if not cfg.sets:
        raise ConfigError("data.sets is empty: name the shard sets to train on, e.g. "
                          "data.sets=[ilsvrc_vid/train]")
    lake = objectstore.locate(cfg.lake)
    dirs = [objectstore.locate(lake, s) for s in cfg.sets]
    missing = [str(d) for d in dirs if not objectstore.is_set(d)]
    if missing:
        raise ConfigError(f"shard sets {missing} do not exist. Fix: build them with "
                          f"launch/preprocess.py (--out {lake}) or set data.lake / data.sets")
    return dirs


def build_loader(cfg: DataConfig, batch_size: int, *, kind: str, masks: bool, seed: int,
                 rank: int, world_size: int, pin_memory: bool = False):
    """A webdataset loader (or, for image sets with ``backend: ffcv``, an FFCV one)."""
    augment = cfg.augment
    if cfg.backend == "ffcv":
        if kind != "image":
            raise ConfigError("data.backend=ffcv serves image datasets only (SSB pretraining); "
                              "use webdataset for clips")
        return FFCVStream.make(cfg, batch_size, augment=augment, seed=seed, rank=rank,
                               world_size=world_size)
    return make_loader(set_dirs(cfg), batch_size, num_workers=cfg.num_workers,
                       epoch_batches=cfg.epoch_batches, rank=rank, world_size=world_size,
                       seed=seed, augment=augment, kind=kind, masks=masks,
                       shuffle_buffer=cfg.shuffle_buffer, merge_objects=cfg.merge_objects,
                       weights=cfg.weights, pin_memory=pin_memory,
                       persistent_workers=False, decode_device=cfg.decode_device)


class FFCVStream:
    """An FFCV image loader presented like the webdataset one: dict batches, ``set_epoch``."""

    def __init__(self, loader: Any, epoch_batches: int):
        self.loader = loader
        self.epoch_batches = epoch_batches

    @classmethod
    def make(cls, cfg: DataConfig, batch_size: int, *, augment, seed: int, rank: int,
             world_size: int) -> "FFCVStream":
        from pipeline.loading.ffcv.loader import make_ffcv_loader

        if not cfg.ffcv_store:
            raise ConfigError("data.backend=ffcv needs data.ffcv_store=<file.beton> "
                              "(write one with launch/ffcv_store.py)")
        loader = make_ffcv_loader(cfg.ffcv_store, batch_size, size=None, augment=augment,
                                  seed=seed, distributed=world_size > 1,
                                  datasets=cfg.sets or None, merge_objects=cfg.merge_objects,
                                  num_workers=max(cfg.num_workers, 1))
        return cls(loader, min(cfg.epoch_batches, len(loader)))

    def set_epoch(self, epoch: int) -> None:
        self.loader.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        for i, (image, mask, index) in enumerate(self.loader):
            if i >= self.epoch_batches:
                return
            yield {"image": image.clone(), "mask": mask.clone(), "index": index.clone()}


class DataStream:
    """Endless batches over epochs, with a resumable ``position`` ``{"epoch", "batch"}``."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.epoch = 0
        self.batch = 0
        self._it: Iterator | None = None

    def _start_epoch(self) -> None:
        self.close()
        self.loader.set_epoch(self.epoch)
        self._it = iter(self.loader)
        self.batch = 0

    def close(self) -> None:
        """Ends the current epoch's iterator now, so its DataLoader workers are shut down here
        and not whenever the garbage collector reaches it (in a later phase run of the same
        process, that was a 5 s join timeout per worker)."""
        it, self._it = self._it, None
        close = getattr(it, "close", None)
        if close is not None:
            close()

    def __iter__(self) -> "DataStream":
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self._start_epoch()
        while True:
            try:
                item = next(self._it)
            except StopIteration:
                self.epoch += 1
                self._start_epoch()
                continue
            self.batch += 1
            return item

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def data_events(self) -> dict[str, int]:
        """What this rank's loader skipped or ignored so far (its ``ReadStats`` counts; none for
        an FFCV loader, whose store was checked when it was written)."""
        stats = getattr(self.loader, "stats", None)
        return stats.events_counts() if stats is not None else {}

    def seek(self, position: dict[str, int]) -> None:
        """Continue after ``position``: same epoch seed, its first ``batch`` batches replayed."""
        self.epoch = int(position["epoch"])
        self._start_epoch()
        for _ in range(int(position["batch"])):
            try:
                next(self._it)
            except StopIteration:
                raise ConfigError(f"cannot resume at {position}: the epoch has fewer batches; "
                                   "data.epoch_batches changed since the checkpoint") from None
            self.batch += 1


def frames_to_input(frames: torch.Tensor, device: torch.device, channels_last: bool = False
                    ) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> ImageNet-normalised float on ``device`` (the encoders' input)."""
    x = frames.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    x = x.sub_(mean).div_(std)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def frames_to_tanh(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float in [-1, 1] (G's output range; D's input range)."""
    return frames.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
