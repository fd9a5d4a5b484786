"""Loading an FFCV store (:func:`make_ffcv_loader`, :func:`iter_beton`), and FFCV's workarounds.

The store is written by :mod:`pipeline.loading.ffcv.store` (its docstring describes the fields);
:mod:`pipeline.loading.ffcv.store` re-exports this module's public names.

Decoding runs in custom JIT decoders (:func:`~pipeline.loading.ffcv.ops.ffcv_ops`). With ``size=(H, W)`` the image is resized
by FFCV's ``resize_crop`` (OpenCV, area interpolation, whole frame) and the mask by nearest
neighbour with half-pixel centres, index for index the same as PyTorch's
``mode="nearest-exact"`` / torchvision ``NEAREST_EXACT`` (what the WebDataset path's
augmentation uses for masks), so ids are never mixed. With ``size=None`` samples are padded to
the largest size in the file (image 0, mask 255 = void); :func:`iter_beton` crops them back.
Random augmentation must apply one draw to both image and mask, which FFCV's per-field
pipelines cannot share, so it runs after loading as a torch step: ``augment=`` reuses
:func:`pipeline.loading.augment.augment_image` (the WebDataset path's own code), ``transform=``
takes any batch-level callable. The loader refuses a ``.beton`` whose sidecar does not match it.

FFCV 1.0.2 quirks handled here: its loader thread can die silently and leave the consumer
waiting (:func:`_next_batch` raises instead), and its OS-cache reader corrupts numba's type
registry (:mod:`pipeline.loading.ffcv.ops`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from pipeline.core.seeds import seed_int
from pipeline.loading.augment import augment_image, resolve_augment
from pipeline.loading.ffcv.format import load_sidecar, require_ffcv, StoreError
from pipeline.loading.ffcv.ops import ffcv_ops


class LoaderThreadDied(RuntimeError):
    """FFCV's batch-producing thread stopped before the end of the epoch."""


def _next_batch(it):
    """``next(it)`` on an FFCV ``EpochIterator``, but raising instead of waiting forever when its
    thread has died (FFCV's own ``__next__`` blocks on the queue: an exception in the pipeline,
    e.g. a compile error, would hang the training loop). Returns None at the end of the epoch."""
    q = it.output_queue
    while q.empty():
        alive = it.is_alive()
        if q.empty() and not alive:
            raise LoaderThreadDied("FFCV's loading thread stopped without finishing the epoch "
                                   "(its exception is printed above, as 'Exception in thread')")
        time.sleep(0.0005)
    try:
        return next(it)
    except StopIteration:
        return None


class FFCVImageLoader:
    """What :func:`make_ffcv_loader` returns: iterates ``(image, mask, index)`` batches.

    ``loader`` is the underlying ``ffcv.loader.Loader``; ``samples`` the sidecar records
    (``samples[i]`` for ``i`` in ``index``). Without ``augment``/``transform`` the tensors are
    views of FFCV's ring buffers: ``clone()`` what must outlive the next few batches.
    """

    def __init__(self, loader, samples: list[dict], *, augment=None, transform=None,
                 seed: int = 0, rank: int = 0):
        self.loader = loader
        self.samples = samples
        self.augment = augment
        self.transform = transform
        self.seed = seed
        self.rank = rank
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    def _augment(self, image, mask, index, gen):
        import torch


        images, masks = [], []
        for b, i in enumerate(index.tolist()):
            h, w = self.samples[i]["height"], self.samples[i]["width"]
            img, m, _ = augment_image(image[b, :, :h, :w], mask[b, :h, :w], self.augment, gen)
            images.append(img)
            masks.append(m)
        return torch.stack(images), torch.stack(masks)

    def __iter__(self):
        gen = None
        if self.augment is not None:
            import torch

            gen = torch.Generator().manual_seed(seed_int("ffcv", self.seed, self.epoch,
                                                          self.rank))
        # FFCV draws its order from its own epoch counter: keep it on ours, so that a resumed
        # run (a fresh loader set to epoch e) reads epoch e's order, not epoch 0's
        self.loader.next_epoch = self.epoch
        self.epoch += 1
        it = iter(self.loader)
        try:
            while True:
                batch = _next_batch(it)
                if batch is None:
                    return
                image, mask, index = batch
                if self.augment is not None:
                    image, mask = self._augment(image, mask, index, gen)
                if self.transform is not None:
                    image, mask = self.transform(image, mask)
                yield image, mask, index
        finally:
            it.close()


def _usable_indices(doc: dict, datasets: Sequence[str] | None,
                    indices: Sequence[int] | None) -> np.ndarray:
    samples = doc["samples"]
    wanted = None
    if datasets is not None:
        wanted = set(datasets)
        known = {s["dataset"] for s in samples} | {f"{s['dataset']}/{s['split']}" for s in samples}
        unknown = wanted - known
        if unknown:
            raise ValueError(f"datasets {sorted(unknown)} are not in this store "
                             f"(it has {sorted(known)})")
    pool = range(len(samples)) if indices is None else (int(i) for i in indices)
    keep = []
    for i in pool:
        s = samples[i]
        if not s["ok"]:
            continue
        if wanted is not None and s["dataset"] not in wanted and \
                f"{s['dataset']}/{s['split']}" not in wanted:
            continue
        keep.append(i)
    if not keep:
        raise StoreError("no usable samples selected from the store")
    return np.array(keep, dtype=np.uint64)


def make_ffcv_loader(beton_path: str | Path, batch_size: int, *,
                     size: tuple[int, int] | None = (300, 300), num_workers: int | None = None,
                     order: str = "random", seed: int = 0, distributed: bool = False,
                     drop_last: bool | None = None, os_cache: bool = True,
                     batches_ahead: int = 3, datasets: Sequence[str] | None = None,
                     indices: Sequence[int] | None = None, merge_objects: bool = False,
                     channels_last: bool = True, augment=None,
                     transform: Callable | None = None) -> FFCVImageLoader:
    """A loader over a store: batches ``(image, mask, index)``, image uint8 ``[B, 3, H, W]``,
    mask uint8 ``[B, H, W]``, index int64 ``[B]`` (position in the sidecar's ``samples``, see
    :func:`load_sidecar`; also ``loader.samples``).

    Geometry, one of:
    * ``size=(H, W)``: resized inside FFCV's JIT pipeline (image: OpenCV area interpolation;
      mask: nearest neighbour, half-pixel centres: never mixes ids);
    * ``size=None``: stored size, padded to the largest sample (image 0, mask 255 = void);
    * ``augment`` (an :class:`pipeline.loading.augment.AugmentConfig`, a preset name such as
      ``"ssb_pretrain"``, or a mapping; leave ``size=None``): FFCV decodes at stored size and
      the WebDataset path's own ``augment_image`` (flip, rotation, rescale, crop, resize; the
      same draw for image and mask) runs per sample in a torch step after loading, seeded by
      ``(seed, epoch, rank)``. FFCV's per-field pipelines cannot share one random draw between
      the image and the mask fields, hence the torch step.
    ``transform(image, mask) -> (image, mask)``: any further torch step on each batch.

    ``order``: ``"random"`` (reshuffled every epoch from ``seed``) or ``"sequential"``;
    ``drop_last`` defaults to True for random and False for sequential order.
    ``distributed=True``: samples split across ranks like ``DistributedSampler`` (padded so that
    every rank gets the same number of batches; needs an initialised process group).
    ``datasets``: keep some datasets only (``"msra10k"``, ``"voc2012/train"``); ``indices``: a
    subset of sidecar positions. ``merge_objects``: ids 1..254 -> 1 (the loader's option).
    ``channels_last=True`` (default, like the WebDataset loader): the image batch is a permuted
    view of the decoder's [B, H, W, 3] memory (shape [B, 3, H, W], channels-last strides);
    False makes it contiguous NCHW, at the price of a uint8 transposing copy that halved the
    throughput here. Use ``.reshape``/``.contiguous()`` where a contiguous tensor is needed.
    ``num_workers``: FFCV's JIT threads (default: CPU count, at most 8); note that FFCV also
    calls ``torch.set_num_threads(num_workers)``.
    """
    require_ffcv()
    from ffcv.fields.decoders import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline import PipelineSpec
    from ffcv.transforms import ToTensor, ToTorchImage

    ops = ffcv_ops()
    doc = load_sidecar(beton_path)
    if order not in ("random", "sequential"):
        raise ValueError(f"order must be 'random' or 'sequential', got {order!r}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ValueError(f"size must be positive, got {size}")
    cfg = None
    if augment is not None:
        cfg = resolve_augment(augment)
        if size is not None:
            raise ValueError("pass size=None with augment=...: the augment config's size (or "
                             "crop) decides the output size")
        if cfg.size is None and cfg.crop is None and int(batch_size) > 1:
            raise ValueError("augment config has neither size nor crop: samples of different "
                             "sizes cannot be batched (set AugmentConfig.size, or batch_size=1)")
    rank = 0
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("make_ffcv_loader(distributed=True) needs an initialised "
                               "torch.distributed process group (torchrun + init_process_group)")
        rank = dist.get_rank()
    if drop_last is None:
        drop_last = order == "random"
    if num_workers is None:
        num_workers = max(1, min(8, os.cpu_count() or 1))

    keep = _usable_indices(doc, datasets, indices)
    max_hw = (max(s["height"] for s in doc["samples"]), max(s["width"] for s in doc["samples"]))
    pipelines = {
        "image": PipelineSpec("image", decoder=ops["ImageDecoder"](size),
                              transforms=[ToTensor(), ToTorchImage(channels_last=channels_last)]),
        "mask": PipelineSpec("mask", decoder=ops["MaskDecoder"](size, max_hw, merge_objects),
                             transforms=[ToTensor()]),
        "index": PipelineSpec("index", decoder=IntDecoder(),
                              transforms=[ToTensor(), ops["Flatten"]()]),
    }
    loader = Loader(str(beton_path), batch_size=int(batch_size), num_workers=int(num_workers),
                    os_cache=os_cache,
                    order=OrderOption.RANDOM if order == "random" else OrderOption.SEQUENTIAL,
                    distributed=distributed, seed=int(seed), indices=keep, pipelines=pipelines,
                    drop_last=drop_last, batches_ahead=int(batches_ahead))
    return FFCVImageLoader(loader, doc["samples"], augment=cfg, transform=transform,
                           seed=int(seed), rank=rank)


def iter_beton(beton_path: str | Path, *, batch_size: int = 16, num_workers: int = 1,
               merge_objects: bool = False) -> Iterator[dict]:
    """Every (usable) sample of a store in order, through the FFCV loader at stored size:
    ``{"index", "key", "dataset", "split", "shard", "mask_format", "image", "mask"}`` with
    ``image`` (H, W, 3) and ``mask`` (H, W) uint8 numpy arrays (copies)."""
    loader = make_ffcv_loader(beton_path, batch_size, size=None, num_workers=num_workers,
                              order="sequential", drop_last=False, merge_objects=merge_objects)
    samples = loader.samples
    for image, mask, index in loader:
        image = image.permute(0, 2, 3, 1).numpy()
        mask = mask.numpy()
        for b, i in enumerate(index.tolist()):
            s = samples[i]
            h, w = s["height"], s["width"]
            yield {"index": i, "key": s["key"], "dataset": s["dataset"], "split": s["split"],
                   "shard": s["shard"], "mask_format": s["mask_format"],
                   "image": image[b, :h, :w].copy(), "mask": mask[b, :h, :w].copy()}
