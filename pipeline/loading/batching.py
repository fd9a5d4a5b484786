"""Batching decoded samples (:func:`collate`), in shared memory inside DataLoader workers.

A batch tensor made in a worker is allocated in shared memory (:func:`alloc`), so handing it to
the main process copies nothing (as torch's ``default_collate`` does); it keeps the samples'
memory layout (channels-last frames stay channels-last). When the samples were decoded straight
into the batch tensor (the loader's flip-only fast path), :func:`collate` is given that tensor
and copies nothing at all.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def in_worker() -> bool:
    """Whether this runs in a DataLoader worker process."""
    return torch.utils.data.get_worker_info() is not None


def alloc(shape: Sequence[int], dtype: torch.dtype = torch.uint8,
          shared: bool = False) -> torch.Tensor:
    """An uninitialised contiguous tensor, in shared memory when ``shared`` (what a DataLoader
    worker hands over without another copy, as torch's default_collate does). Uses torch's private
    ``TypedStorage._new_shared``, as default_collate does: torch is pinned for it in
    pyproject.toml, and tests/unit/test_torch_private_api.py guards it."""
    if not shared:
        return torch.empty(tuple(shape), dtype=dtype)
    numel = 1
    for n in shape:
        numel *= int(n)
    base = torch.empty(0, dtype=dtype)
    storage = base._typed_storage()._new_shared(numel, device=base.device)
    return base.new(storage).view(tuple(shape))


def _alloc_batch_like(t: torch.Tensor, n: int, shared: bool) -> torch.Tensor:
    """[n, *t.shape] with the same dimension order in memory as ``t`` (e.g. channels-last)."""
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    buf = alloc([n] + [t.shape[d] for d in order], t.dtype, shared)
    return buf.permute(0, *[1 + order.index(d) for d in range(t.dim())])


def _stack(tensors: Sequence[torch.Tensor], shared: bool,
           out: torch.Tensor | None = None, into: torch.Tensor | None = None) -> torch.Tensor:
    if out is not None and all(t.data_ptr() == out[i].data_ptr() and t.stride() == out[i].stride()
                               for i, t in enumerate(tensors)):
        return out  # decoded straight into the batch
    if into is not None and tuple(into.shape) == (len(tensors),) + tuple(tensors[0].shape):
        buf = into  # a reused buffer (pipeline/loading/bufferpool.py)
    else:
        buf = _alloc_batch_like(tensors[0], len(tensors), shared)
    for i, t in enumerate(tensors):
        buf[i].copy_(t)
    return buf


def collate(samples: Sequence[dict[str, Any]], *, shared: bool | None = None,
            out: torch.Tensor | None = None, mask_into: torch.Tensor | None = None
            ) -> dict[str, Any]:
    """Stack decoded samples into a batch dict (its keys are listed in the docstring of
    :mod:`pipeline.loading.loader`). The batch keeps the samples' memory layout, and is put in
    shared memory inside DataLoader workers (``shared``; default: whether this is one).
    ``out``: the batch tensor the samples were decoded into, if any (then nothing is copied);
    ``mask_into``: a buffer for the masks (copied into it when its shape fits)."""
    shared = in_worker() if shared is None else shared
    name = "frames" if "frames" in samples[0] else "image"
    tensors = [s[name] for s in samples]
    if any(t.shape != tensors[0].shape for t in tensors):
        shapes = sorted({tuple(t.shape) for t in tensors})
        raise ValueError(f"samples of different shapes {shapes} cannot be batched: set "
                         "AugmentConfig.size (e.g. a preset) or use batch_size=1")
    batch: dict[str, Any] = {name: _stack(tensors, shared, out)}
    masks = [s.get("mask") for s in samples]
    if any(m is not None for m in masks):
        hw = tensors[0].shape[-2:]
        has = torch.tensor([m is not None for m in masks])
        full = [m if m is not None else torch.full(hw, 255, dtype=torch.uint8) for m in masks]
        batch["mask"] = _stack(full, shared, into=mask_into)
        if not bool(has.all()):
            batch["has_mask"] = has
    batch["key"] = [s["key"] for s in samples]
    batch["meta"] = [s["meta"] for s in samples]
    return batch
