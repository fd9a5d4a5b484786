"""Reused batch buffers (pipeline/loading/bufferpool.py): a worker writes a buffer again only
once the main process holds nothing of its last batch, so batches, views and slices a trainer
keeps are never overwritten; and the buffers really are reused."""

from __future__ import annotations

import torch

from pipeline.loading import loader as L
from pipeline.loading.augment import AugmentConfig
from pipeline.loading.bufferpool import BufferPool, PoolWatcher

from support.lakes import clip_sample, write_shard


def _clip_set(folder, n_shards=4, per_shard=5):
    for s in range(n_shards):
        write_shard(folder, s, [clip_sample(f"seq{s}", t, h=32, w=40) for t in range(per_shard)])
    return folder


def test_held_batches_and_views_are_never_overwritten(tmp_path):
    d = _clip_set(tmp_path / "davis2017" / "train")
    ref = {s["key"]: s for s in L.iter_samples(d)}
    loader = L.make_loader(d, batch_size=2, num_workers=2, epoch_batches=40, rank=0,
                           world_size=1, augment=AugmentConfig(hflip=0.5), seed=3,
                           buffer_slots=6)  # 6 held below pin 6 of the 12 slots
    held = []  # (what is kept, a copy made when it arrived)
    for i, batch in enumerate(loader):
        for j, key in enumerate(batch["key"]):  # what arrives is the right clip, reused or not
            flip = batch["meta"][j]["augment"]["hflip"]
            want, want_mask = ref[key]["frames"], ref[key]["mask"]
            if flip:
                want, want_mask = want.flip(-1), want_mask.flip(-1)
            assert torch.equal(batch["frames"][j], want), (i, key)
            assert torch.equal(batch["mask"][j], want_mask), (i, key)
        if i in (3, 11):
            held.append((batch["frames"], batch["frames"].clone()))       # the whole batch
        elif i in (6, 15):
            view = batch["frames"][1, :, 0]                                 # a view only
            held.append((view, view.clone()))
        elif i in (8, 20):
            held.append((batch["mask"], batch["mask"].clone()))            # the masks only
        del batch
    watcher = loader.pool_watcher
    print(f"pooled {watcher.received}, reused {watcher.reused} of 40 batches")
    assert watcher is not None and watcher.received >= 30   # pooled batches (others: fresh)
    assert watcher.reused >= 20, f"buffers were reused only {watcher.reused} times"
    for k, (kept, copy) in enumerate(held):
        assert torch.equal(kept, copy), f"held tensor {k} was overwritten"


def test_a_slot_is_freed_only_when_its_storage_is_gone():
    pool = BufferPool(num_workers=1, slots=2)
    watcher = PoolWatcher(pool)
    a, key_a = pool.take(0, {"pixels": (2, 3)})
    b, key_b = pool.take(0, {"pixels": (2, 3)})
    fresh, key_c = pool.take(0, {"pixels": (2, 3)})    # both slots taken: a fresh buffer
    a, b, fresh = a["pixels"], b["pixels"], fresh["pixels"]
    assert key_a == (0, 0, False) and key_b == (0, 1, False) and key_c is None
    assert fresh.data_ptr() not in (a.data_ptr(), b.data_ptr())
    # what the main process receives: tensors on the same storage as the worker's buffers
    got_a = torch.empty(0, dtype=a.dtype).set_(a.untyped_storage()).view(2, 3)
    got_b = torch.empty(0, dtype=b.dtype).set_(b.untyped_storage()).view(2, 3)
    watcher.receive(key_a, [got_a])
    watcher.receive(key_b, [got_b])
    del a, b, fresh                                    # (the worker's own references)
    pool._buffers.clear()
    view = got_a[0]
    del got_a, got_b
    watcher.poll()
    assert pool.flags.tolist() == [[1, 0]]             # slot 0 still seen through `view`
    del view
    watcher.poll()
    assert pool.flags.tolist() == [[0, 0]] and watcher.outstanding == 0


def test_a_new_shape_gets_a_new_buffer_in_a_free_slot():
    pool = BufferPool(num_workers=1, slots=1)
    a, key = pool.take(0, {"pixels": (2, 3), "mask": (2,)})
    pool.flags[key[:2]] = 0
    again, key2 = pool.take(0, {"pixels": (2, 3), "mask": (2,)})
    assert key2 == (0, 0, True) and again["pixels"].data_ptr() == a["pixels"].data_ptr()
    assert again["mask"].data_ptr() == a["mask"].data_ptr()
    pool.flags[key2[:2]] = 0
    other, key3 = pool.take(0, {"pixels": (4, 3), "mask": (4,)})
    assert key3 == (0, 0, False) and tuple(other["pixels"].shape) == (4, 3)


def test_a_slot_waits_for_every_tensor_of_its_batch():
    """A trainer that keeps only the masks of a batch keeps its slot taken."""
    pool = BufferPool(num_workers=1, slots=1)
    watcher = PoolWatcher(pool)
    bufs, key = pool.take(0, {"pixels": (2, 3), "mask": (2,)})
    frames, mask = (torch.empty(0, dtype=torch.uint8).set_(b.untyped_storage()) for b in
                    bufs.values())
    watcher.receive(key, [frames, mask])
    del bufs, frames
    pool._buffers.clear()
    watcher.poll()
    assert pool.flags.tolist() == [[1]]                # the mask is still held
    del mask
    watcher.poll()
    assert pool.flags.tolist() == [[0]]
