"""Frames decoded straight into a batch slot (simplejpeg, ``decode_jpeg_into``) are the pixels of
the general decoder (torchvision's ``decode_jpeg``), mirrored exactly with a flip; files the
in-place decoder refuses fall back, and the loader's batches take the in-place path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.loading import decode as D
from pipeline.loading import loader as L
from pipeline.loading.augment import AugmentConfig
from support.lakes import clip_sample, write_shard
from support.logs import logs_warning


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _into(data: bytes, hflip: bool = False) -> torch.Tensor:
    ref = D.decode_jpeg(data)
    dst = torch.full((ref.shape[1], ref.shape[2], 3), 7, dtype=torch.uint8)
    assert D.decode_jpeg_into(data, dst, hflip)
    return dst


@pytest.mark.parametrize("kw", [dict(quality=95), dict(quality=75, subsampling=2),
                                dict(quality=90, progressive=True)],
                         ids=["q95-444", "q75-420", "progressive"])
def test_in_place_decode_equals_the_general_decoder(kw):
    data = _jpeg(_noise(61, 83), **kw)
    ref = D.decode_jpeg(data).permute(1, 2, 0)
    assert torch.equal(_into(data), ref)
    assert torch.equal(_into(data, hflip=True), ref.flip(1))


def test_grey_jpeg_decodes_to_the_same_rgb():
    data = _jpeg(_noise(40, 50)[..., 0])
    assert Image.open(io.BytesIO(data)).mode == "L"
    assert torch.equal(_into(data), D.decode_jpeg(data).permute(1, 2, 0))


def test_real_davis_frames_are_decoded_identically(real_davis):
    frames = sorted((real_davis / "JPEGImages" / "480p").glob("*/*.jpg"))
    assert len(frames) >= 50
    for path in frames[::2]:
        data = path.read_bytes()
        ref = D.decode_jpeg(data).permute(1, 2, 0)
        assert torch.equal(_into(data), ref), path
        assert torch.equal(_into(data, hflip=True), ref.flip(1)), path


def test_what_it_cannot_do_in_place_is_refused():
    data = _jpeg(_noise(30, 40))
    dst = torch.zeros((30, 41, 3), dtype=torch.uint8)
    assert not D.decode_jpeg_into(data, dst)                      # another size
    assert not D.decode_jpeg_into(data[: len(data) // 2], torch.zeros((30, 40, 3),
                                                                    dtype=torch.uint8))  # cut
    assert not D.decode_jpeg_into(data, torch.zeros((40, 30, 3), dtype=torch.uint8)[:, :30])
    assert not D.decode_jpeg_into(b"not a jpeg", torch.zeros((30, 40, 3), dtype=torch.uint8))


def test_a_truncated_frame_in_a_batch_is_still_counted_and_skipped(tmp_path, caplog):
    d = tmp_path / "davis2017" / "train"
    samples = [clip_sample("s", t) for t in range(4)]
    good = samples[1]["members"]["02.jpg"]
    samples[1]["members"]["02.jpg"] = good[: len(good) // 2]
    write_shard(d, 0, samples)
    ref = {s["key"]: s for s in L.iter_samples(d, stats=L.ReadStats())}
    assert "s/00001" not in ref
    loader = L.make_loader(d, batch_size=3, num_workers=0, epoch_batches=2, rank=0, world_size=1,
                           shuffle_buffer=0)
    with logs_warning(caplog, match="s/00001"):
        batches = list(loader)
    for b in batches:
        assert "s/00001" not in b["key"]
        for i, key in enumerate(b["key"]):
            assert torch.equal(b["frames"][i], ref[key]["frames"])
    assert loader.stats.corrupt_samples >= 1


def test_loader_batches_are_decoded_in_place(tmp_path, monkeypatch):
    """With the general decoder broken, flip-only batches still come out right: every frame went
    straight into the batch."""
    d = tmp_path / "davis2017" / "train"
    write_shard(d, 0, [clip_sample("s", t, h=48, w=64) for t in range(4)])
    ref = {s["key"]: s for s in L.iter_samples(d)}

    def broken(data):
        raise AssertionError("the general decoder was used")

    monkeypatch.setattr(D, "decode_jpeg", broken)
    loader = L.make_loader(d, batch_size=2, num_workers=0, epoch_batches=4, rank=0, world_size=1,
                           augment=AugmentConfig(hflip=0.5), seed=3)
    flips = set()
    for b in loader:
        for i, key in enumerate(b["key"]):
            flip = b["meta"][i]["augment"]["hflip"]
            flips.add(flip)
            want = ref[key]["frames"].flip(-1) if flip else ref[key]["frames"]
            assert torch.equal(b["frames"][i], want)
    assert flips == {True, False}
