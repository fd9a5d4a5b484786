"""Loading an FFCV store (:func:`make_ffcv_loader`, :func:`iter_beton`), and FFCV's workarounds.

The store is written by :mod:`pipeline.loading.ffcv.store` (its docstring describes the fields);
:mod:`pipeline.loading.ffcv.store` re-exports this module's public names.

Decoding runs in custom JIT decoders (:func:`_ops`). With ``size=(H, W)`` the image is resized
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
registry (:func:`_fix_os_cache_reader`).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from pipeline.loading.ffcv.format import MASK_PAD_VALUE, StoreError, load_sidecar, require_ffcv

_OPS: dict | None = None


def _fix_os_cache_reader() -> None:
    """Work around an FFCV 1.0.2 bug that corrupts numba's type registry.

    ``OSCacheManager.compile_reader`` (run by every ``Loader(os_cache=True)``) builds its
    signature from ``state_type``, which takes the *interned* numba type ``nb.uint8[::1]`` and
    sets ``mutable = False`` on it in place. That changes the hash of a type object that live
    dispatchers use in their overload keys, so any function already compiled for a writable
    1-D uint8 array breaks: numba raises ``KeyError`` when it next lists that function's
    signatures (seen here: a second loader reusing a helper failed to compile inside FFCV's
    pipeline thread, and the consumer then waited forever) or in its finalizer ("Exception
    ignored" warnings at garbage collection). The replacement compiles the same reader (look up
    the allocation's size, return that slice of the read-only memory map) with a read-only
    type built fresh, so no shared type object is modified.
    """
    from ffcv.memory_managers.os_cache import OSCacheManager
    from ffcv.pipeline.compiler import Compiler

    if getattr(OSCacheManager, "_stcnn_reader_fixed", False):
        return
    import numba as nb

    def compile_reader(self):
        data = nb.types.Array(nb.uint8, 1, "C", readonly=True)  # np.memmap(mode="r")
        table = nb.types.Array(nb.uint64, 1, "C")  # sorted allocation pointers, their sizes

        def read(address, mem_state):
            mmap, ptrs, sizes = mem_state
            n = sizes[np.searchsorted(ptrs, address)]
            return mmap[address:address + n]

        return Compiler.compile(read, data(nb.uint64, nb.types.Tuple([data, table, table])))

    OSCacheManager.compile_reader = compile_reader
    OSCacheManager._stcnn_reader_fixed = True


def _ops() -> dict:
    """FFCV operations, defined on first use so that this module imports without ffcv."""
    global _OPS
    if _OPS is not None:
        return _OPS
    require_ffcv()
    from dataclasses import replace

    import numba as nb
    from ffcv.libffcv import imdecode, resize_crop
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler
    from ffcv.pipeline.operation import Operation

    _fix_os_cache_reader()
    u1 = np.dtype("<u1")

    # Compiled once, without fastmath (FFCV compiles pipeline code with fastmath=True, which may
    # turn the division into a reciprocal multiply): the same float32 steps as PyTorch's
    # "nearest-exact" index, so the JIT resize equals F.interpolate / torchvision NEAREST_EXACT.
    @nb.njit(nogil=True, fastmath=False, cache=False)
    def nearest_src(i, in_size, out_size):
        scale = np.float32(in_size) / np.float32(out_size)
        pos = (np.float32(i) + np.float32(0.5)) * scale
        return min(np.int64(np.floor(pos)), in_size - 1)

    class ImageDecoder(Operation):
        """``RGBImageField`` (raw or jpg, any size) -> (H, W, 3) uint8: resized to ``size`` with
        FFCV's ``resize_crop`` (OpenCV, area; whole frame, no crop), or zero-padded to the
        largest size in the file."""

        def __init__(self, size: tuple[int, int] | None):
            super().__init__()
            self.size = size

        def declare_state_and_memory(self, previous_state):
            max_h = int(self.metadata["height"].max())
            max_w = int(self.metadata["width"].max())
            out = (int(self.size[0]), int(self.size[1]), 3) if self.size else (max_h, max_w, 3)
            return (replace(previous_state, jit_mode=True, shape=out, dtype=u1),
                    (AllocationQuery(out, u1), AllocationQuery((max_h * max_w * 3,), u1)))

        def generate_code(self) -> Callable:
            mem_read = self.memory_read
            imdecode_c = Compiler.compile(imdecode)
            resize_c = Compiler.compile(resize_crop)
            my_range = Compiler.get_iterator()
            do_resize = self.size is not None

            def decode(batch_indices, storage, metadata, storage_state):
                destination, temp = storage
                for i in my_range(len(batch_indices)):
                    field = metadata[batch_indices[i]]
                    data = mem_read(field["data_ptr"], storage_state)
                    h = np.int64(field["height"])
                    w = np.int64(field["width"])
                    if field["mode"] == 0:  # jpg
                        buf = temp[i]
                        imdecode_c(data, buf, h, w, h, w, 0, 0, 1, 1, False, False)
                        src = buf[:h * w * 3].reshape(h, w, 3)
                    else:  # raw pixels
                        src = data[:h * w * 3].reshape(h, w, 3)
                    dst = destination[i]
                    if do_resize:
                        resize_c(src, 0, h, 0, w, dst)
                    else:
                        dst[:, :, :] = 0
                        dst[:h, :w, :] = src
                return destination[:len(batch_indices)]

            decode.is_parallel = True
            return decode

    class MaskDecoder(Operation):
        """``BytesField`` mask record -> (H, W) uint8 labels: resized to ``size`` by nearest
        neighbour (half-pixel centres, PyTorch's "nearest-exact"), or padded with 255 (void) to
        the largest size. ``merge_objects`` turns ids 1..254 into 1 (0 and 255 kept)."""

        def __init__(self, size: tuple[int, int] | None, max_hw: tuple[int, int],
                     merge_objects: bool = False):
            super().__init__()
            self.size = size
            self.max_hw = max_hw  # the mask sizes live in the data, not in the field metadata
            self.merge_objects = merge_objects

        def declare_state_and_memory(self, previous_state):
            out = tuple(int(v) for v in (self.size or self.max_hw))
            return (replace(previous_state, jit_mode=True, shape=out, dtype=u1),
                    AllocationQuery(out, u1))

        def generate_code(self) -> Callable:
            mem_read = self.memory_read
            my_range = Compiler.get_iterator()
            do_resize = self.size is not None
            merge = bool(self.merge_objects)
            pad = np.uint8(MASK_PAD_VALUE)
            one = np.uint8(1)
            void = np.uint8(255)

            def decode(batch_indices, destination, metadata, storage_state):
                out_h = destination.shape[1]
                out_w = destination.shape[2]
                for i in my_range(len(batch_indices)):
                    data = mem_read(metadata[batch_indices[i]]["ptr"], storage_state)
                    h = (np.int64(data[0]) | (np.int64(data[1]) << 8) | (np.int64(data[2]) << 16)
                         | (np.int64(data[3]) << 24))
                    w = (np.int64(data[4]) | (np.int64(data[5]) << 8) | (np.int64(data[6]) << 16)
                         | (np.int64(data[7]) << 24))
                    dst = destination[i]
                    if do_resize:
                        cols = np.empty(out_w, np.int64)
                        for x in range(out_w):
                            cols[x] = nearest_src(x, w, out_w)
                        for y in range(out_h):
                            row = 8 + nearest_src(y, h, out_h) * w
                            for x in range(out_w):
                                dst[y, x] = data[row + cols[x]]
                    else:
                        dst[:, :] = pad
                        for y in range(h):
                            dst[y, :w] = data[8 + y * w:8 + (y + 1) * w]
                    if merge:
                        for y in range(out_h):
                            for x in range(out_w):
                                v = dst[y, x]
                                if v != 0 and v != void:
                                    dst[y, x] = one
                return destination[:len(batch_indices)]

            decode.is_parallel = True
            return decode

    class Flatten(Operation):
        """(B, 1) -> (B,) torch view (for the ``index`` field)."""

        def generate_code(self) -> Callable:
            def flatten(inp, dst):
                return inp.reshape(-1)

            return flatten

        def declare_state_and_memory(self, previous_state):
            return replace(previous_state, jit_mode=False, shape=()), None

    _OPS = {"ImageDecoder": ImageDecoder, "MaskDecoder": MaskDecoder, "Flatten": Flatten}
    return _OPS


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


def _seed_int(*parts) -> int:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


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

        from pipeline.loading.augment import augment_image

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

            gen = torch.Generator().manual_seed(_seed_int("ffcv", self.seed, self.epoch,
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

    ops = _ops()
    doc = load_sidecar(beton_path)
    if order not in ("random", "sequential"):
        raise ValueError(f"order must be 'random' or 'sequential', got {order!r}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ValueError(f"size must be positive, got {size}")
    cfg = None
    if augment is not None:
        from pipeline.loading.augment import resolve_augment

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
