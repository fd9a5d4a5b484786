"""FFCV's pipeline operations for the store's fields (image decode + augmentation, mask records),
and the workaround for FFCV 1.0.2's OS-cache reader."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.loading.ffcv.format import MASK_PAD_VALUE, require_ffcv


_OPS: dict | None = None   # built on first use (ffcv is optional)


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


def ffcv_ops() -> dict:
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
