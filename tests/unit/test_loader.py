"""Loader and augmentation: shard contract in, uint8 batches out, DDP split, corrupt data.

The shards are written by the hand-made builder of ``support/lakes.py``, which follows the
data-lake contract (pipeline/lake/contract.py): ``<key>.<ext>`` tar members, real JPEGs, palette
PNG masks, ``NNNNN_stats.json``.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from pipeline.loading import loader as L
from pipeline.loading.augment import (AugmentConfig, augment_clip, augment_image, get_preset,
                                   resolve_augment, to_float)
from support.lakes import (clip_sample, keys_of, palette_mask, write_clip_set, write_image_set,
                           write_shard)
from support.logs import logs_warning

# ----------------------------------------------------------------------------------------------
# augmentation


def test_presets_match_the_paper():
    assert get_preset("tcb_pretrain").size == (480, 854) and get_preset("tcb_pretrain").hflip == 0.5
    ssb = get_preset("ssb_pretrain")
    assert ssb.size == (300, 300) and ssb.rotate_deg == 10 and ssb.hflip == 0.5
    off = get_preset("offline")
    assert off.rotate_deg == 30 and off.scale == (0.75, 1.25) and off.size == (400, 710)
    assert get_preset("tcb_pretrain_code").time_reverse == 0.4
    assert resolve_augment({"preset": "offline", "size": [200, 300]}).size == (200, 300)
    assert resolve_augment(None).is_identity
    with pytest.raises(ValueError, match="unknown"):
        resolve_augment({"flip": 0.5})
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(hflip=2)


def test_flip_is_applied_to_all_frames_and_mask_exactly():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (4, 3, 20, 30), dtype=torch.uint8)
    mask = torch.from_numpy(palette_mask(20, 30))
    out, m, p = augment_clip(frames, mask, AugmentConfig(hflip=1.0), g)
    assert p["hflip"] and torch.equal(out, frames.flip(-1)) and torch.equal(m, mask.flip(-1))
    out, m, p = augment_clip(frames, mask, AugmentConfig(hflip=0.0), g)
    assert not p["hflip"] and torch.equal(out, frames) and torch.equal(m, mask)
    # flip inside the rotation path too: every frame is the same transform of its source
    cfg = AugmentConfig(size=(20, 30), hflip=1.0, rotate_deg=5)
    out, m, p = augment_clip(frames, mask, cfg, torch.Generator().manual_seed(1))
    for i in range(4):
        one, m1, _ = augment_clip(frames[i:i + 1], mask, cfg, torch.Generator().manual_seed(1))
        assert torch.equal(one[0], out[i]) and torch.equal(m1, m)


def test_palette_ids_survive_flip_rotate_resize():
    mask = torch.from_numpy(palette_mask(120, 160))
    frames = torch.randint(0, 256, (2, 3, 120, 160), dtype=torch.uint8)
    for name, cfg in [("offline", get_preset("offline", size=(90, 150))),
                      ("ssb", get_preset("ssb_pretrain", size=(64, 64))),
                      ("up", AugmentConfig(size=(240, 333), rotate_deg=20, scale=(1.1, 1.2))),
                      ("resize only", AugmentConfig(size=(61, 77), hflip=0.5)),
                      ("crop", get_preset("ssb_pretrain_code", crop=(100, 200)))]:
        for seed in range(4):
            out, m, p = augment_clip(frames, mask, cfg, torch.Generator().manual_seed(seed))
            assert out.dtype == torch.uint8 and m.dtype == torch.uint8, name
            assert out.shape[-2:] == m.shape, name
            vals = set(torch.unique(m).tolist())
            assert vals <= {0, 1, 2, 255}, (name, vals)
            assert {1, 2} <= vals, (name, vals)


def test_padding_fill_and_rotation_of_frames():
    frames = torch.full((1, 3, 40, 40), 200, dtype=torch.uint8)
    mask = torch.zeros(40, 40, dtype=torch.uint8)
    cfg = AugmentConfig(hflip=0, scale=(0.5, 0.5))
    out, m, _ = augment_clip(frames, mask, cfg)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0] and out[0, :, 20, 20].tolist() == [200] * 3
    assert m[0, 0] == 255 and m[20, 20] == 0  # outside the source = void by default
    out, m, _ = augment_clip(frames, mask, AugmentConfig(hflip=0, scale=(0.5, 0.5), mask_fill=0))
    assert m.max() == 0
    # a 90 degree rotation of a square image is an exact rot90
    sq = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    from pipeline.loading.augment import _warp
    out, _ = _warp(sq, None, (32, 32), 90.0, 1.0, False, 255, True)
    assert any(torch.equal(out, torch.rot90(sq, k, dims=(2, 3))) for k in (1, 3))


def test_time_reverse_only_without_mask_and_image_api():
    frames = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 5, 5).contiguous()
    cfg = AugmentConfig(hflip=0, time_reverse=1.0)
    out, _, p = augment_clip(frames, None, cfg)
    assert p["time_reverse"] and out[:, 0, 0, 0].tolist() == [3, 2, 1, 0]
    out, _, p = augment_clip(frames, torch.zeros(5, 5, dtype=torch.uint8), cfg)
    assert not p["time_reverse"] and out[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    img, m, _ = augment_image(frames[0], torch.zeros(5, 5, dtype=torch.uint8),
                              AugmentConfig(size=(7, 9)))
    assert img.shape == (3, 7, 9) and m.shape == (7, 9)


def test_augment_is_reproducible_with_a_generator():
    frames = torch.randint(0, 256, (3, 3, 50, 60), dtype=torch.uint8)
    mask = torch.from_numpy(palette_mask(50, 60))
    cfg = get_preset("offline", size=(40, 50))
    a = augment_clip(frames, mask, cfg, torch.Generator().manual_seed(7))
    b = augment_clip(frames, mask, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


def test_to_float():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    y = to_float(x, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert y.dtype == torch.float32 and torch.allclose(y, torch.ones_like(y))
    assert torch.allclose(to_float(x, None, None), torch.ones(2, 3, 4, 4))


# ----------------------------------------------------------------------------------------------
# shard listing and batches


def test_clip_batches_shapes_and_dtypes(tmp_path):
    d = tmp_path / "davis2017" / "train"
    write_clip_set(d, 3, per_shard=4, T=5)
    loader = L.make_loader(d, batch_size=2, num_workers=0, epoch_batches=3, world_size=1, rank=0,
                           augment=AugmentConfig(size=(32, 40)), kind="clip", seed=1)
    batches = list(loader)
    assert len(batches) == 3 == len(loader)
    for b in batches:
        assert b["frames"].dtype == torch.uint8 and b["frames"].shape == (2, 5, 3, 32, 40)
        assert b["mask"].dtype == torch.uint8 and b["mask"].shape == (2, 32, 40)
        assert len(b["key"]) == 2 and all(k.startswith("seq") and "/" in k for k in b["key"])
        assert all(m["dataset"] == "davis2017" and len(m["frame_ids"]) == 5 for m in b["meta"])
        assert all(m["shard"].endswith(".tar") for m in b["meta"])
        assert set(torch.unique(b["mask"]).tolist()) <= {0, 1, 2, 255}
        assert isinstance(b["stats"], dict) and b["stats"]["corrupt_samples"] == 0
    assert loader.stats.samples == 6 and loader.stats.corrupt == 0


def test_masks_can_be_skipped(tmp_path):
    d = tmp_path / "davis2017" / "train"
    write_clip_set(d, 1, per_shard=3)
    loader = L.make_loader(d, batch_size=3, num_workers=0, epoch_batches=1, rank=0, world_size=1,
                           augment="tcb_pretrain", masks=False)
    (batch,) = list(loader)
    assert "mask" not in batch and batch["frames"].shape == (3, 3, 3, 480, 854)
    assert all("mask" not in s for s in L.iter_samples(d, masks=False))


def test_image_batches_and_binary_masks(tmp_path):
    d = tmp_path / "msra10k" / "train"
    write_image_set(d, 2, per_shard=5, mask_format="binary")
    loader = L.make_loader(d, batch_size=3, num_workers=0, epoch_batches=4, kind="image",
                           augment=AugmentConfig(size=(40, 56), hflip=0.5), rank=0, world_size=1)
    n = 0
    for b in loader:
        n += 1
        assert b["image"].dtype == torch.uint8 and b["image"].shape == (3, 3, 40, 56)
        assert b["mask"].shape == (3, 40, 56)
        assert set(torch.unique(b["mask"]).tolist()) <= {0, 1}  # 0/255 source -> {0, 1}
        assert 1 in torch.unique(b["mask"]).tolist()
        assert "frames" not in b
    assert n == 4


def test_voc_ids_kept_and_merge_objects(tmp_path):
    d = tmp_path / "voc2012" / "train"
    write_image_set(d, 1, per_shard=2, mask_format="voc")
    s = next(L.iter_samples(d))
    assert set(torch.unique(s["mask"]).tolist()) == {0, 1, 2, 255}
    s = next(L.iter_samples(d, merge_objects=True))
    assert set(torch.unique(s["mask"]).tolist()) == {0, 1, 255}


def test_palette_ids_through_the_loader_with_rotation(tmp_path):
    d = tmp_path / "davis2017" / "train"
    write_clip_set(d, 2, per_shard=3, h=96, w=128)
    loader = L.make_loader(d, batch_size=2, num_workers=0, epoch_batches=4, rank=0, world_size=1,
                           augment=get_preset("offline", size=(72, 100)))
    for b in loader:
        for m in b["mask"]:
            vals = set(torch.unique(m).tolist())
            assert vals <= {0, 1, 2, 255} and {1, 2} <= vals


def test_loader_flip_is_frame_and_mask_consistent(tmp_path):
    d = tmp_path / "davis2017" / "train"
    write_clip_set(d, 1, per_shard=2, T=4, h=48, w=60)
    src = next(L.iter_samples(d))
    for p, flipped in [(1.0, True), (0.0, False)]:
        loader = L.make_loader(d, batch_size=1, num_workers=0, epoch_batches=2, rank=0,
                               world_size=1, augment=AugmentConfig(hflip=p))
        for b in loader:
            f, m = b["frames"][0], b["mask"][0]
            w3 = f.shape[-1] // 3
            left = f[:, 0, :, :w3].float().mean((1, 2))
            right = f[:, 0, :, -w3:].float().mean((1, 2))
            if flipped:  # the red third moved right in every frame, and object 1 with it
                assert (right > 150).all() and (left < 50).all()
                assert (m[:, -w3:] == 1).any() and not (m[:, :w3] == 1).any()
            else:
                assert (left > 150).all() and (right < 50).all()
                assert (m[:, :w3] == 1).any()
            # the frames keep their order (intensity 200, 210, 220, 230 oldest first)
            red = f[:, 0].float().amax((1, 2))
            assert (red[1:] > red[:-1]).all()
            assert (b["meta"][0]["augment"] or {}).get("hflip", False) is flipped
    # exact: the loader's flipped tensors are the decoded ones mirrored
    loader = L.make_loader(d, batch_size=1, num_workers=0, epoch_batches=4, rank=0, world_size=1,
                           augment=AugmentConfig(hflip=1.0), shuffle_buffer=0)
    by_key = {s["key"]: s for s in L.iter_samples(d)}
    for b in loader:
        s = by_key[b["key"][0]]
        assert torch.equal(b["frames"][0], s["frames"].flip(-1))
        assert torch.equal(b["mask"][0], s["mask"].flip(-1))


def test_flip_fast_path_in_workers_and_mixed_sizes(tmp_path):
    """Flip-only configs decode straight into the (shared-memory) batch; samples that need a
    resize take the general path; both give exactly decode-then-augment results."""
    a, b = tmp_path / "a" / "train", tmp_path / "b" / "train"
    for s in range(2):
        write_shard(a, s, [clip_sample(f"small{s}", t, h=32, w=40) for t in range(3)])
        write_shard(b, s, [clip_sample(f"big{s}", t, h=48, w=64) for t in range(3)])
    ref = {s["key"]: s for s in L.iter_samples([a, b])}
    cfg = AugmentConfig(size=(32, 40), hflip=0.5)
    loader = L.make_loader([a, b], batch_size=3, num_workers=2, epoch_batches=6, rank=0,
                           world_size=1, augment=cfg, seed=5)
    seen = set()
    for batch in loader:
        assert batch["frames"].shape == (3, 3, 3, 32, 40) and batch["mask"].shape == (3, 32, 40)
        for i, key in enumerate(batch["key"]):
            seen.add("small" if key.startswith("small") else "big")
            r = ref[key]
            flip = batch["meta"][i]["augment"]["hflip"]
            if key.startswith("small"):  # same size: decoded into the batch, flip fused
                want_f = r["frames"].flip(-1) if flip else r["frames"]
                want_m = r["mask"].flip(-1) if flip else r["mask"]
                assert torch.equal(batch["frames"][i], want_f)
                assert torch.equal(batch["mask"][i], want_m)
            else:  # resized: ids only, the flip moves object 1 to the right
                vals = set(torch.unique(batch["mask"][i]).tolist())
                assert vals <= {0, 1, 2, 255} and 1 in vals
                cols = (batch["mask"][i] == 1).nonzero()[:, 1].float().mean()
                assert (cols > 20) if flip else (cols < 20)
    assert seen == {"small", "big"}
    # same size everywhere and no augmentation: also decoded in place, bit-exact
    loader = L.make_loader(a, batch_size=2, num_workers=2, epoch_batches=3, rank=0, world_size=1)
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            assert torch.equal(batch["frames"][i], ref[key]["frames"])
            assert batch["meta"][i]["augment"] is None


def test_different_sizes_without_a_target_size_is_a_clear_error(tmp_path):
    d = tmp_path / "mixed"
    write_shard(d, 0, [clip_sample("a", 0, h=32, w=40), clip_sample("b", 0, h=48, w=64)])
    loader = L.make_loader(d, batch_size=2, num_workers=0, epoch_batches=1, rank=0, world_size=1,
                           shuffle_buffer=0, augment=AugmentConfig(hflip=0.5))
    with pytest.raises(ValueError, match="AugmentConfig.size"):
        list(loader)


@pytest.mark.parametrize("persistent", [False, True])
def test_epoch_length_is_exact_with_workers(tmp_path, persistent):
    d = tmp_path / "davis2017" / "train"
    write_clip_set(d, 4, per_shard=3)
    loader = L.make_loader(d, batch_size=2, num_workers=2, epoch_batches=7, rank=0, world_size=1,
                           augment=AugmentConfig(size=(24, 32)), persistent_workers=persistent)
    epochs = []
    for _ in range(3):
        batches = list(loader)
        assert len(batches) == 7
        assert all(b["frames"].shape == (2, 3, 3, 24, 32) for b in batches)
        epochs.append([k for b in batches for k in b["key"]])
    assert loader.stats.samples == 3 * 7 * 2  # every delivered sample counted once
    assert epochs[0] != epochs[1] != epochs[2]  # each epoch draws anew


def test_unfinished_shards_are_ignored(tmp_path, caplog):
    d = tmp_path / "davis2017" / "train"
    write_clip_set(d, 2, per_shard=3)
    write_shard(d, 2, [clip_sample("unfinished", t) for t in range(3)], finished=False)
    (d / "00003.tar.tmp").write_bytes(b"partial")
    assert [Path(p).name for p in L.list_shards(d)] == ["00000.tar", "00001.tar"]
    loader = L.make_loader(d, batch_size=2, num_workers=0, epoch_batches=10, rank=0, world_size=1)
    keys = [k for b in loader for k in b["key"]]
    assert keys and not any(k.startswith("unfinished") for k in keys)
    assert not any(s["key"].startswith("unfinished") for s in L.iter_samples(d))
    with logs_warning(caplog, match="unfinished"):
        sets = L.shard_sets([d / "00000.tar", d / "00002.tar"])
    assert sets[0].shards == (str(d / "00000.tar"),)


def test_too_few_shards_to_read_once_is_a_clear_error(tmp_path, monkeypatch):
    """Exact mode (each shard read once): every (rank, worker) stream needs shards of its own."""
    d = tmp_path / "davis2017" / "train"
    write_clip_set(d, 3, per_shard=10)
    with pytest.raises(ValueError) as ei:
        L.make_dataset(d, num_workers=2, rank=0, world_size=2, resampled=False)
    msg = str(ei.value)
    assert isinstance(ei.value, L.NotEnoughShardsError)
    assert "has 3 finished shard" in msg and "= 4 are needed" in msg
    assert "--shard-max-count" in msg and "num_workers <= 1" in msg
    assert "--shard-max-count 7" in msg  # 30 samples / 4 shards needed
    # from the environment (torchrun) too
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="world_size=4"):
        L.make_dataset(d, num_workers=1, resampled=False)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    # 3 shards are enough for 3 ranks x 1 worker
    L.make_dataset(d, num_workers=1, rank=2, world_size=3, resampled=False)
    # ... and in the workers, where the worker count is known (exact mode)
    ds = L.make_dataset(d, rank=0, world_size=2, resampled=False, batch_size=1)
    with pytest.raises(L.NotEnoughShardsError):
        next(iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)))


def test_resampled_any_shard_count_serves_any_number_of_ranks_and_workers(tmp_path):
    """3 shards, 4 ranks x 2 workers = 8 streams: each rank gets exactly epoch_batches batches,
    drawn from the whole set with its own seeds, and the same (seed, epoch, rank) again gives the
    same batches (an exact resume)."""
    d = tmp_path / "davis2017" / "train"
    shards = write_clip_set(d, 3, per_shard=4)
    every = set().union(*(keys_of(p) for p in shards))

    def run(rank: int, epoch: int) -> list[tuple[list[str], torch.Tensor]]:
        loader = L.make_loader(d, batch_size=2, num_workers=2, epoch_batches=5, rank=rank,
                               world_size=4, seed=7, augment=get_preset("offline", size=(24, 32)))
        loader.set_epoch(epoch)
        return [(list(b["key"]), b["frames"]) for b in loader]

    got = {rank: run(rank, 1) for rank in range(4)}
    for rank, batches in got.items():
        assert len(batches) == 5 and all(len(k) == 2 for k, _ in batches), rank
        assert {k for ks, _ in batches for k in ks} <= every
    orders = {tuple(k for ks, _ in got[r] for k in ks) for r in got}
    assert len(orders) == 4, "ranks drew the same samples: their seeds are not their own"
    again = run(2, 1)
    assert [k for k, _ in again] == [k for k, _ in got[2]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(again, got[2]))
    assert [k for k, _ in run(2, 2)] != [k for k, _ in got[2]]


def test_no_finished_shard_is_an_error(tmp_path):
    d = tmp_path / "empty"
    write_shard(d, 0, [clip_sample("a", 0)], finished=False)
    with pytest.raises(FileNotFoundError, match="no finished shard"):
        L.make_loader(d, batch_size=1, num_workers=0, epoch_batches=1)


def test_rank_split_and_reproducibility(tmp_path):
    d = tmp_path / "davis2017" / "train"
    shards = write_clip_set(d, 4, per_shard=3)
    keys = {}
    for rank in (0, 1):
        mine = set().union(*(keys_of(p) for p in L.split_by_rank(shards, rank, 2)))
        loader = L.make_loader(d, batch_size=2, num_workers=0, epoch_batches=6, rank=rank,
                               world_size=2, seed=3, augment=get_preset("offline", size=(24, 32)))
        got = [(b["key"], b["frames"]) for b in loader]
        keys[rank] = {k for ks, _ in got for k in ks}
        assert keys[rank] <= mine
        again = [(b["key"], b["frames"]) for b in
                 L.make_loader(d, batch_size=2, num_workers=0, epoch_batches=6, rank=rank,
                               world_size=2, seed=3, augment=get_preset("offline", size=(24, 32)))]
        assert [k for k, _ in got] == [k for k, _ in again]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, again))
    assert not keys[0] & keys[1]
    # the next epoch draws differently
    loader = L.make_loader(d, batch_size=2, num_workers=0, epoch_batches=6, rank=0, world_size=2,
                           seed=3, augment=get_preset("offline", size=(24, 32)))
    e0 = [b["frames"] for b in loader]
    e1 = [b["frames"] for b in loader]
    assert not all(torch.equal(a, b) for a, b in zip(e0, e1))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_replays_after_resume(tmp_path, workers):
    d = tmp_path / "davis2017" / "train"
    write_clip_set(d, 4, per_shard=3)

    def make():
        return L.make_loader(d, batch_size=2, num_workers=workers, epoch_batches=3, rank=0,
                             world_size=1, seed=11, augment=get_preset("offline", size=(24, 32)))
    first = make()
    runs = [[(b["key"], b["frames"]) for b in first] for _ in range(3)]
    resumed = make()
    resumed.set_epoch(2)
    again = [(b["key"], b["frames"]) for b in resumed]
    assert [k for k, _ in again] == [k for k, _ in runs[2]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(again, runs[2]))
    assert [k for k, _ in runs[0]] != [k for k, _ in runs[1]]


def test_several_sets_are_mixed(tmp_path):
    a, b = tmp_path / "msra10k" / "train", tmp_path / "voc2012" / "train"
    write_image_set(a, 2, per_shard=4, prefix="msra", mask_format="binary")
    write_image_set(b, 2, per_shard=4, prefix="voc", mask_format="voc")
    loader = L.make_loader([a, b], batch_size=4, num_workers=0, epoch_batches=8, kind="image",
                           rank=0, world_size=1, augment=get_preset("ssb_pretrain", size=(32, 32)))
    datasets = {m["dataset"] for bt in loader for m in bt["meta"]}
    assert datasets == {"msra10k", "voc2012"}
    with pytest.raises(L.NotEnoughShardsError, match="voc2012"):
        write_image_set(tmp_path / "small" / "voc2012", 1)
        L.make_dataset([a, tmp_path / "small" / "voc2012"], num_workers=2, kind="image", rank=0,
                       world_size=1, resampled=False)


def test_wrong_kind_fails_clearly(tmp_path, caplog):
    d = tmp_path / "msra10k" / "train"
    write_image_set(d, 1, per_shard=3)
    loader = L.make_loader(d, batch_size=1, num_workers=0, epoch_batches=1, kind="clip", rank=0,
                           world_size=1)
    with logs_warning(caplog), pytest.raises(RuntimeError, match="kind"):
        list(loader)


# ----------------------------------------------------------------------------------------------
# corrupt data and pickles


def test_corrupt_jpeg_member_is_skipped_counted_and_named(tmp_path, caplog):
    d = tmp_path / "davis2017" / "train"
    samples = [clip_sample("bad", t) for t in range(4)]
    good = samples[2]["members"]["01.jpg"]
    samples[2]["members"]["01.jpg"] = good[: len(good) // 2]  # truncated JPEG
    samples[3]["members"]["json"] = b"{not json"
    path = write_shard(d, 0, samples)
    stats = L.ReadStats()
    with logs_warning(caplog) as msgs:
        got = [s["key"] for s in L.iter_samples(d, stats=stats)]
    assert got == ["bad/00000", "bad/00001"]
    assert stats.corrupt_samples == 2 and stats.samples == 2 and stats.corrupt == 2
    assert any(str(path) in m and "bad/00002" in m and "JPEG" in m for m in msgs)
    assert any(str(path) in m and "bad/00003" in m and "json" in m for m in msgs)
    assert {e[2] for e in stats.events} == {"bad/00002", "bad/00003"}


def test_truncated_tar_is_skipped_counted_and_named(tmp_path, caplog):
    d = tmp_path / "davis2017" / "train"
    path = write_shard(d, 0, [clip_sample("cut", t) for t in range(4)])
    data = path.read_bytes()
    # cut in the middle of the third sample's members
    with tarfile.open(path) as tf:
        third = [m for m in tf.getmembers() if m.name.startswith("cut/00002.")][1]
    path.write_bytes(data[: third.offset_data + third.size // 2])
    stats = L.ReadStats()
    with logs_warning(caplog, match=r"00000\.tar.*cut/00002"):
        got = [s["key"] for s in L.iter_samples(d, stats=stats)]
    assert got == ["cut/00000", "cut/00001"]
    assert stats.truncated_shards == 1 and stats.corrupt == 1
    assert stats.events[-1][:3] == ("truncated_shards", str(path), "cut/00002")


def test_cut_at_a_member_boundary_counts_the_incomplete_sample(tmp_path, caplog):
    d = tmp_path / "davis2017" / "train"
    path = write_shard(d, 0, [clip_sample("cut", t) for t in range(2)])
    with tarfile.open(path) as tf:
        members = tf.getmembers()
    last = members[-1]  # cut/00001.json: drop it and the end-of-archive blocks
    path.write_bytes(path.read_bytes()[: last.offset])
    stats = L.ReadStats()
    with logs_warning(caplog, match="cut/00001"):
        got = [s["key"] for s in L.iter_samples(d, stats=stats)]
    assert got == ["cut/00000"] and stats.corrupt == 1


def test_corrupt_members_are_counted_through_the_loader_with_workers(tmp_path):
    d = tmp_path / "davis2017" / "train"
    for s in range(2):
        samples = [clip_sample(f"s{s}", t) for t in range(3)]
        samples[1]["members"]["mask.png"] = b"\x89PNG\r\n\x1a\n broken"
        write_shard(d, s, samples)
    loader = L.make_loader(d, batch_size=1, num_workers=2, epoch_batches=8, rank=0, world_size=1,
                           shuffle_buffer=0)
    keys = [k for b in loader for k in b["key"]]
    assert not any(k.endswith("00001") for k in keys)
    assert loader.stats.corrupt_samples >= 2 and loader.stats.samples == 8
    assert any("mask.png" in e[3] for e in loader.stats.events)


class _Boom:
    """Unpickling this object writes a flag file (what a malicious pickle would do)."""

    def __init__(self, flag: Path):
        self.flag = str(flag)

    def __reduce__(self):
        return (Path.write_text, (Path(self.flag), "unpickled!"))


def test_pickle_members_are_never_unpickled(tmp_path, caplog):
    flag = tmp_path / "flag.txt"
    payload = pickle.dumps(_Boom(flag))
    pickle.loads(payload)  # sanity: unpickling really sets the flag
    assert flag.exists()
    flag.unlink()
    d = tmp_path / "davis2017" / "train"
    samples = [clip_sample("pk", t) for t in range(3)]
    for s in samples:
        s["members"]["pyd"] = payload
        s["members"]["pth"] = payload
    write_shard(d, 0, samples, extra_members={"pk/00002.pickle": payload, "__meta__": payload})
    stats = L.ReadStats()
    with logs_warning(caplog) as msgs:
        got = list(L.iter_samples(d, stats=stats))
    assert {m for w in msgs for m in ("pyd", "pth", "pickle") if f"'.{m}'" in w} \
        == {"pyd", "pth", "pickle"}
    assert [s["key"] for s in got] == ["pk/00000", "pk/00001", "pk/00002"]
    assert all("pyd" not in s and "pth" not in s for s in got)
    assert stats.ignored_members == 8 and stats.corrupt == 0
    loader = L.make_loader(d, batch_size=3, num_workers=0, epoch_batches=2, rank=0, world_size=1)
    assert len(list(loader)) == 2
    assert loader.stats.ignored_members >= 8
    assert not flag.exists()


def test_iter_samples_autodetects_kind(tmp_path):
    write_clip_set(tmp_path / "c", 1, per_shard=2, mask_format=None, dataset="ilsvrc_vid")
    write_image_set(tmp_path / "i", 1, per_shard=2)
    got = list(L.iter_samples([tmp_path / "c", tmp_path / "i"]))
    assert [("frames" in s, "image" in s) for s in got] == [(True, False)] * 2 + [(False, True)] * 2
    assert "mask" not in got[0] and got[0]["frames"].shape == (3, 3, 48, 64)
    assert got[2]["image"].shape == (3, 40, 56) and got[2]["mask"].shape == (40, 56)
