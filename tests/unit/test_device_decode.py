"""The device-decode path on the CPU (``decode_device="cpu"``): workers send JPEG bytes, the
trainer decodes a batch at a time; the batches equal the worker-decoded ones pixel for pixel
(same libjpeg-turbo decoder on the CPU), flips and resizes included; corrupt clips are dropped
and counted. On CUDA the same code runs nvJPEG (measured when a GPU is lent)."""

from __future__ import annotations

import pytest
import torch

from pipeline.loading import loader as L
from pipeline.loading.augment import AugmentConfig

from support.lakes import clip_sample, write_shard
from support.logs import logs_warning


def _set(folder, sizes=((32, 40),), n_shards=2, per_shard=4):
    for s in range(n_shards):
        h, w = sizes[s % len(sizes)]
        write_shard(folder, s, [clip_sample(f"seq{s}", t, h=h, w=w) for t in range(per_shard)])
    return folder


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("size", [None, (24, 30)], ids=["native", "resized"])
def test_device_path_equals_the_worker_path(tmp_path, workers, size):
    d = _set(tmp_path / "davis2017" / "train", sizes=((32, 40),))
    cfg = AugmentConfig(hflip=0.5, size=size)
    kw = dict(batch_size=2, num_workers=workers, epoch_batches=6, rank=0, world_size=1,
              augment=cfg, seed=7)
    cpu = list(L.make_loader(d, **kw))
    dev = list(L.make_loader(d, decode_device="cpu", **kw))
    assert [b["key"] for b in cpu] == [b["key"] for b in dev]
    flips = set()
    for a, b in zip(cpu, dev):
        assert "jpeg" not in b and b["frames"].dtype == torch.uint8
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["mask"], b["mask"])
        assert a["frames"].stride() == b["frames"].stride()  # same memory layout too
        assert [m["augment"]["hflip"] for m in a["meta"]] == \
            [m["augment"]["hflip"] for m in b["meta"]]
        flips.update(m["augment"]["hflip"] for m in b["meta"])
    assert flips == {True, False}  # both branches seen


def test_workers_send_bytes_not_pixels(tmp_path):
    from pipeline.loading.loader import make_dataset

    d = _set(tmp_path / "davis2017" / "train")
    ds = make_dataset(d, augment=AugmentConfig(hflip=0.5), batch_size=2, rank=0, world_size=1,
                      decode_device="cpu")
    batch = next(iter(ds))
    assert "frames" not in batch and len(batch["jpeg"]) == 2
    assert all(t.dtype == torch.uint8 and t.dim() == 1 for clip in batch["jpeg"] for t in clip)
    assert batch["mask"].shape == (2, 32, 40)  # masks are decoded (and flipped) in the worker


def test_a_corrupt_jpeg_is_dropped_and_counted(tmp_path, caplog):
    d = tmp_path / "davis2017" / "train"
    good = [clip_sample("a", t, h=32, w=40) for t in range(3)]
    bad = clip_sample("b", 0, h=32, w=40)
    data = bytearray(bad["members"]["01.jpg"])
    data[len(data) // 2:] = b"\x00" * (len(data) - len(data) // 2)  # header intact, scan garbled
    bad["members"]["01.jpg"] = bytes(data)
    write_shard(d, 0, good + [bad])
    loader = L.make_loader(d, batch_size=4, num_workers=0, epoch_batches=1, rank=0, world_size=1,
                           augment=AugmentConfig(hflip=0.0), shuffle_buffer=0, decode_device="cpu")
    with logs_warning(caplog, match="device JPEG decode failed"):
        [batch] = list(loader)
    assert sorted(batch["key"]) == ["a/00000", "a/00001", "a/00002"]
    assert batch["frames"].shape == (3, 3, 3, 32, 40) and batch["mask"].shape == (3, 32, 40)
    assert loader.stats.corrupt_samples == 1


def test_presets_that_move_pixels_are_refused(tmp_path):
    d = _set(tmp_path / "davis2017" / "train")
    with pytest.raises(ValueError, match="flip-only"):
        L.make_loader(d, batch_size=2, num_workers=0, rank=0, world_size=1,
                      augment=AugmentConfig(rotate_deg=10), decode_device="cpu")
