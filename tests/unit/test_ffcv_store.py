"""FFCV store (pipeline/loading/ffcv/store.py, ffcv_loader.py): shards -> .beton -> FFCV loader,
checked pixel by pixel against decoding the shard members directly with PIL (and against the
WebDataset loader when it is there)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.ffcv

try:
    import ffcv  # noqa: F401
    HAVE_FFCV, FFCV_ERROR = True, ""
except Exception as e:  # pragma: no cover - depends on the environment
    HAVE_FFCV, FFCV_ERROR = False, f"{type(e).__name__}: {e}"

from pipeline.loading import ffcv as fs  # noqa: E402  (imports without ffcv)
from support.lakes import write_shard as shard_writer  # noqa: E402
from support.logs import logs_warning  # noqa: E402

needs_ffcv = pytest.mark.skipif(not HAVE_FFCV, reason=f"ffcv is not importable ({FFCV_ERROR}); "
                                                      f"{fs.INSTALL_HINT}")


# ------------------------------------------------------------------------------------------------
# A small, contract-conformant image-sample lake written with tarfile + PIL


def _jpeg(rng: np.random.Generator, h: int, w: int) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                    ((xx + yy) * 7) % 256], axis=2).astype(np.int16)
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png(arr: np.ndarray, palette: bool) -> bytes:
    im = Image.fromarray(arr.astype(np.uint8), mode="L")
    if palette:
        im = im.convert("P")  # keeps the values as indices
        pal = np.zeros((256, 3), np.uint8)
        pal[1], pal[2], pal[255] = (128, 0, 0), (0, 128, 0), (224, 224, 192)
        im.putpalette(pal.reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _msra_mask(rng, h, w) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 5: 4 * w // 5] = 255
    m[rng.integers(0, h, 5), rng.integers(0, w, 5)] = 128  # anti-aliased edge: still foreground
    return m


def _voc_mask(rng, h, w) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[2: h // 2, 2: w // 2] = 1
    m[h // 2: h - 2, w // 2: w - 2] = 2
    m[h // 2, :] = 255  # void boundary
    m[:, w // 2] = 255
    return m


def write_shard(folder: Path, index: int, samples: list[dict], *, finished: bool = True,
                extra: dict[str, bytes] | None = None) -> Path:
    """samples: dicts with key, jpg, png, meta: :func:`support.lakes.write_shard` of their members."""
    return shard_writer(folder, index, [
        {"key": s["key"], "members": {"jpg": s["jpg"], "mask.png": s["png"],
                                      "json": json.dumps(s["meta"]).encode()}}
        for s in samples], finished=finished, extra_members=extra)


def make_samples(dataset: str, split: str, sizes, seed: int, prefix: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for n, (h, w) in enumerate(sizes):
        key = f"{prefix}{n:03d}"
        if dataset == "msra10k":
            mask, fmt, objects = _msra_mask(rng, h, w), "binary", [1]
            png = _png(mask, palette=False)
        else:
            mask, fmt, objects = _voc_mask(rng, h, w), "voc", [1, 2]
            png = _png(mask, palette=True)
        out.append({"key": key, "jpg": _jpeg(rng, h, w), "png": png,
                    "meta": {"dataset": dataset, "split": split, "sequence": key, "height": h,
                             "width": w, "objects": objects, "mask_format": fmt}})
    return out


def expected(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """Decode the members directly with PIL, independently of the module under test."""
    image = np.array(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
    with Image.open(io.BytesIO(sample["png"])) as im:
        assert im.mode in ("L", "P")
        values = np.array(im)
    if sample["meta"]["mask_format"] == "binary":
        values = (values > 0).astype(np.uint8)
    return image, values


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    msra = root / "msra10k" / "train"
    voc = root / "voc2012" / "train"
    a = make_samples("msra10k", "train", [(23, 37), (40, 40), (48, 64)], 1, "msra_a")
    b = make_samples("msra10k", "train", [(57, 31), (20, 20)], 2, "msra_b")
    c = make_samples("msra10k", "train", [(30, 30)], 3, "unfinished")
    v = make_samples("voc2012", "train", [(45, 60), (33, 27), (64, 50), (21, 44)], 4, "2007_")
    write_shard(msra, 0, a)
    write_shard(msra, 1, b)
    write_shard(msra, 2, c, finished=False)  # a tar without its stats file: must be ignored
    write_shard(voc, 0, v)
    by_key = {s["key"]: s for s in a + b + v}
    return {"root": root, "dirs": [msra, voc], "samples": by_key, "unfinished": c}


@pytest.fixture(scope="module")
def beton(lake, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "static.beton"
    summary = fs.write_beton(lake["dirs"], out, num_workers=2)
    return out, summary


# ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # > 5 s on 2 cores: keeps -m "not slow" under 3 min
@needs_ffcv
def test_raw_store_round_trips_exactly(lake, beton):
    out, summary = beton
    assert summary["samples"] == len(lake["samples"]) == 9
    assert summary["failures"] == 0 and not summary["skipped"]
    assert summary["datasets"] == {"msra10k/train": 5, "voc2012/train": 4}
    assert out.is_file() and fs.sidecar_path(out).is_file()
    assert not list(out.parent.glob(".*"))  # no temp files left

    seen, voc_values = [], set()
    for item in fs.iter_beton(out, batch_size=4):
        src = lake["samples"][item["key"]]
        image, mask = expected(src)
        assert item["dataset"] == src["meta"]["dataset"]
        assert item["image"].shape == image.shape and item["image"].dtype == np.uint8
        np.testing.assert_array_equal(item["image"], image, err_msg=item["key"])
        np.testing.assert_array_equal(item["mask"], mask, err_msg=item["key"])
        seen.append(item["key"])
        if item["dataset"] == "voc2012":
            voc_values |= set(np.unique(item["mask"]).tolist())
        else:
            assert set(np.unique(item["mask"]).tolist()) == {0, 1}  # 0/128/255 -> {0, 1}
    assert sorted(seen) == sorted(lake["samples"])  # the unfinished shard is not there
    assert voc_values == {0, 1, 2, 255}  # ids and the void survive


@needs_ffcv
def test_loader_resizes_masks_nearest(lake, beton):
    import torch
    import torch.nn.functional as F

    out, _ = beton
    doc = fs.load_sidecar(out)
    size = (32, 48)
    loader = fs.make_ffcv_loader(out, 4, size=size, num_workers=1, order="sequential")
    seen = []
    for image, mask, index in loader:
        assert image.shape[1:] == (3, *size) and image.dtype == torch.uint8
        assert mask.shape[1:] == size and mask.dtype == torch.uint8
        assert index.dtype == torch.int64 and index.ndim == 1
        for b, i in enumerate(index.tolist()):
            src = lake["samples"][doc["samples"][i]["key"]]
            img, m = expected(src)
            want = F.interpolate(torch.from_numpy(m)[None, None].float(), size=size,
                                 mode="nearest-exact")[0, 0].to(torch.uint8)
            assert torch.equal(mask[b], want), doc["samples"][i]["key"]
            # the image is resized by FFCV/OpenCV (area): compare loosely with the original
            small = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float(),
                                  size=size, mode="area")[0]
            assert (image[b].float() - small).abs().mean() < 6
            seen.append(i)
    assert seen == list(range(len(doc["samples"])))


@pytest.mark.slow  # > 5 s on 2 cores: keeps -m "not slow" under 3 min
@needs_ffcv
def test_random_order_is_seeded_and_covers_all(beton):
    out, _ = beton
    loader = fs.make_ffcv_loader(out, 2, size=(16, 16), num_workers=2, order="random", seed=3,
                                 drop_last=False)
    epoch0 = [i for _, _, idx in loader for i in idx.tolist()]
    epoch1 = [i for _, _, idx in loader for i in idx.tolist()]
    assert sorted(epoch0) == sorted(epoch1) == list(range(9))
    assert epoch0 != epoch1  # reshuffled each epoch
    again = fs.make_ffcv_loader(out, 2, size=(16, 16), num_workers=1, order="random", seed=3,
                                drop_last=False)
    assert [i for _, _, idx in again for i in idx.tolist()] == epoch0
    # a dataset filter and drop_last (the default for random order)
    voc = fs.make_ffcv_loader(out, 3, size=(16, 16), num_workers=1, datasets=["voc2012"])
    assert len(voc) == 1
    doc = fs.load_sidecar(out)
    for _, _, idx in voc:
        assert all(doc["samples"][i]["dataset"] == "voc2012" for i in idx.tolist())


@needs_ffcv
def test_transform_step_flips_image_and_mask_together(lake, beton):
    import torch
    import torch.nn.functional as F

    out, _ = beton
    seen = []

    def hflip(image, mask):
        seen.append(image.shape[0])
        return image.flip(-1), mask.flip(-1)

    flipped = fs.make_ffcv_loader(out, 9, size=(20, 24), num_workers=1, order="sequential",
                                  transform=hflip)
    (image, mask, index), = list(flipped)
    assert seen == [9]
    for b, i in enumerate(index.tolist()):
        _, m = expected(lake["samples"][flipped.samples[i]["key"]])
        want = F.interpolate(torch.from_numpy(m)[None, None].float(), size=(20, 24),
                             mode="nearest-exact")[0, 0].to(torch.uint8)
        assert torch.equal(mask[b], want.flip(-1))


@needs_ffcv
def test_jpg_mode_and_max_resolution(lake, tmp_path):
    out = tmp_path / "jpg.beton"
    summary = fs.write_beton(lake["dirs"], out, image_mode="jpg", jpeg_quality=95,
                             max_resolution=40)
    assert summary["samples"] == 9 and summary["image_mode"] == "jpg"
    n = 0
    for item in fs.iter_beton(out):
        image, mask = expected(lake["samples"][item["key"]])
        h, w = mask.shape
        if max(h, w) > 40:
            r = 40 / max(h, w)
            h, w = int(r * h), int(r * w)
            mask = fs.resize_mask_nearest(mask, (h, w))
            image = None
        assert item["mask"].shape == (h, w) and item["image"].shape == (h, w, 3)
        np.testing.assert_array_equal(item["mask"], mask)  # masks stay exact
        if image is not None:  # re-encoded JPEG: within tolerance
            assert np.abs(item["image"].astype(int) - image.astype(int)).mean() < 3
        n += 1
    assert n == 9


@needs_ffcv
def test_rerun_is_skipped_and_atomic(lake, tmp_path):
    out = tmp_path / "a.beton"
    first = fs.write_beton([lake["dirs"][1]], out)
    mtime = out.stat().st_mtime_ns
    again = fs.write_beton([lake["dirs"][1]], out)
    assert again["skipped"] and again["samples"] == first["samples"] == 4
    assert out.stat().st_mtime_ns == mtime
    # a sidecar that does not match its .beton (interrupted write) is refused
    with open(out, "ab") as f:
        f.write(b"x")
    with pytest.raises(fs.StoreError, match="does not match"):
        fs.make_ffcv_loader(out, 2)
    redo = fs.write_beton([lake["dirs"][1]], out)  # ... and rebuilt by a re-run
    assert not redo["skipped"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.beton", "a.beton.keys.json"]


@needs_ffcv
def test_corrupt_member_is_skipped_with_warning(tmp_path, caplog):
    folder = tmp_path / "voc2012" / "val"
    good = make_samples("voc2012", "val", [(20, 30), (25, 25)], 7, "ok")
    bad = make_samples("voc2012", "val", [(22, 22)], 8, "broken")[0]
    bad["jpg"] = bad["jpg"][:40]  # truncated JPEG
    write_shard(folder, 0, good + [bad])
    out = tmp_path / "c.beton"
    with logs_warning(caplog, match=r"voc2012/val/00000.tar broken000"):
        summary = fs.write_beton([folder], out)
    assert summary["samples"] == 2 and summary["failures"] == 1
    assert [i["key"] for i in fs.iter_beton(out)] == ["ok000", "ok001"]
    with pytest.raises(fs.StoreError, match="broken000"):
        fs.write_beton([folder], tmp_path / "d.beton", on_error="raise")
    assert not (tmp_path / "d.beton").exists()


@needs_ffcv
def test_clip_shards_are_refused(tmp_path):
    folder = tmp_path / "davis2016" / "train"
    folder.mkdir(parents=True)
    write_shard(folder, 0, [], extra={"bear/00004.00.jpg": b"x", "bear/00004.mask.png": b"y"})
    with pytest.raises(fs.StoreError, match="static-image stage only"):
        fs.write_beton([folder], tmp_path / "x.beton")


@needs_ffcv
def test_empty_shard_dir_is_a_clear_error(lake, tmp_path):
    empty = tmp_path / "msra10k" / "train"
    empty.mkdir(parents=True)
    with pytest.raises(fs.NoFinishedShards, match="no finished shards"):
        fs.write_beton([empty], tmp_path / "e.beton")
    write_shard(empty, 0, lake["unfinished"], finished=False)  # only an unfinished tar
    with pytest.raises(fs.NoFinishedShards, match="no finished shards"):
        fs.write_beton([lake["dirs"][0], empty], tmp_path / "e.beton")
    with pytest.raises(fs.NoFinishedShards, match="pass those instead"):
        fs.write_beton([lake["root"]], tmp_path / "e.beton")  # the lake root, not a shard set
    with pytest.raises(fs.NoFinishedShards, match="does not exist"):
        fs.write_beton([tmp_path / "nope"], tmp_path / "e.beton")
    assert not (tmp_path / "e.beton").exists()


def test_missing_ffcv_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ffcv", None)  # makes `import ffcv` raise ImportError
    with pytest.raises(fs.FFCVUnavailable, match=r"pip install -e \.\[ffcv\]") as info:
        fs.write_beton([tmp_path], tmp_path / "x.beton")
    assert "libturbojpeg0-dev" in str(info.value)


def test_mask_rules_and_nearest_match_torch():
    import torch
    import torch.nn.functional as F

    palette = _png(np.array([[0, 1, 2], [255, 2, 1]], np.uint8), palette=True)
    np.testing.assert_array_equal(fs.decode_mask(palette, "voc"), [[0, 1, 2], [255, 2, 1]])
    binary = _png(np.array([[0, 255, 128]], np.uint8), palette=False)
    np.testing.assert_array_equal(fs.decode_mask(binary, "binary"), [[0, 1, 1]])
    rec = fs.encode_mask_record(np.arange(12, dtype=np.uint8).reshape(3, 4))
    np.testing.assert_array_equal(fs.decode_mask_record(rec), np.arange(12).reshape(3, 4))
    m = np.random.default_rng(0).integers(0, 4, (37, 53)).astype(np.uint8)
    for size in [(10, 3), (300, 300), (37, 53), (74, 106), (19, 100), (1, 1)]:
        want = F.interpolate(torch.from_numpy(m)[None, None].float(), size=size,
                             mode="nearest-exact")[0, 0].numpy()
        np.testing.assert_array_equal(fs.resize_mask_nearest(m, size), want, err_msg=str(size))


@needs_ffcv
def test_merge_objects_keeps_void(beton):
    out, _ = beton
    for item in fs.iter_beton(out, merge_objects=True):
        values = set(np.unique(item["mask"]).tolist())
        assert values <= ({0, 1, 255} if item["dataset"] == "voc2012" else {0, 1})


@needs_ffcv
def test_augment_step_is_the_webdataset_augmentation(lake, beton):
    import torch

    from pipeline.loading import augment
    out, _ = beton
    cfg = augment.AugmentConfig(size=(24, 32), hflip=1.0)  # deterministic: always flipped
    loader = fs.make_ffcv_loader(out, 4, size=None, augment=cfg, num_workers=1,
                                 order="sequential")
    n = 0
    for image, mask, index in loader:
        assert image.shape[1:] == (3, 24, 32) and mask.shape[1:] == (24, 32)
        for b, i in enumerate(index.tolist()):
            img, m = expected(lake["samples"][loader.samples[i]["key"]])
            want_img, want_mask, params = augment.augment_image(
                torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(m), cfg)
            assert params["hflip"]
            assert torch.equal(mask[b], want_mask)
            assert (image[b].int() - want_img.int()).abs().max() <= 1
            n += 1
    assert n == 9
    with pytest.raises(ValueError, match="size=None"):
        fs.make_ffcv_loader(out, 4, size=(8, 8), augment=cfg)


# one rank of a two-process gloo group (torchrun): the sample positions its loaders give
RANK_SPLIT = """
import json, sys
import torch.distributed as dist
from pipeline.loading import ffcv as fs

dist.init_process_group("gloo")
got = {}
for name, indices in (("even", list(range(8))), ("all", None)):
    loader = fs.make_ffcv_loader(sys.argv[1], 2, size=(8, 8), num_workers=1, distributed=True,
                                 drop_last=False, indices=indices)
    got[name] = [i for _, _, idx in loader for i in idx.tolist()]
with open(f"{sys.argv[2]}/rank{dist.get_rank()}.json", "w") as f:
    json.dump(got, f)
dist.destroy_process_group()
"""


@pytest.mark.slow  # two torchrun processes importing FFCV
@needs_ffcv
def test_distributed_needs_a_process_group_and_splits_by_rank(beton, tmp_path):
    import torch.distributed as dist

    from support import child_env, run, torchrun_head

    out, _ = beton
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this test process")
    with pytest.raises(RuntimeError, match="process group"):
        fs.make_ffcv_loader(out, 2, distributed=True)
    script = tmp_path / "rank_split.py"
    script.write_text(RANK_SPLIT)
    proc = run([*torchrun_head(2), str(script), str(out), str(tmp_path)], env=child_env(),
               timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # 8 samples: each rank 4, disjoint, together all 8
    assert len(r0["even"]) == len(r1["even"]) == 4
    assert not set(r0["even"]) & set(r1["even"])
    assert sorted(r0["even"] + r1["even"]) == list(range(8))
    # 9 samples: padded like DistributedSampler (5 each), together all 9, one sample twice
    assert len(r0["all"]) == len(r1["all"]) == 5
    assert set(r0["all"]) | set(r1["all"]) == set(range(9))
    assert len(set(r0["all"]) & set(r1["all"])) == 1


def test_dead_loader_thread_raises_instead_of_hanging():
    import queue
    import threading

    from pipeline.loading.ffcv.loader import _next_batch

    t = threading.Thread(target=lambda: None)
    t.output_queue = queue.Queue()
    t.start()
    t.join()
    with pytest.raises(fs.LoaderThreadDied, match="stopped without finishing"):
        _next_batch(t)


@needs_ffcv
def test_loaders_do_not_corrupt_numba_types(beton):
    """FFCV 1.0.2's OS-cache reader flips ``mutable`` on numba's interned uint8[::1] type; a
    function compiled before a loader was made then fails to type (KeyError) afterwards."""
    import numba as nb

    out, _ = beton

    @nb.njit
    def first(a):
        return a[0]

    assert first(np.ones(3, np.uint8)) == 1  # keys its overload with array(uint8, 1d, C)
    fs.make_ffcv_loader(out, 2, size=(8, 8), num_workers=1)
    fs.make_ffcv_loader(out, 2, size=(8, 8), num_workers=1)
    assert nb.uint8[::1].mutable

    @nb.njit
    def caller(a):
        return first(a) + 1

    assert caller(np.ones(3, np.uint8)) == 2


# ------------------------------------------------------------------------------------------------
# The real preprocessing path and the WebDataset loader


@pytest.fixture(scope="module")
def synthetic_lake(tmp_path_factory):
    from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
    from pipeline.synthetic import SyntheticSpec, write_dataset
    root = tmp_path_factory.mktemp("synth")
    dirs = []
    for name in ("msra10k", "voc2012"):
        src = write_dataset(name, root / "src" / name, SyntheticSpec(size=(64, 48), n_images=5))
        run_preprocess(PreprocessConfig(name, src, root / "lake", splits=["train"],
                                        shard_max_count=3, progress=False))
        dirs.append(root / "lake" / name / "train")
    out = root / "synth.beton"
    summary = fs.write_beton(dirs, out, num_workers=2)
    return dirs, out, summary


def _members(shard_dirs):
    """(dataset, key) -> {"jpg", "png", "meta"} straight from the finished tars."""
    found = {}
    for d in shard_dirs:
        for tar in fs.finished_shards(d):
            with tarfile.open(tar) as tf:
                for ti in tf:
                    key, _, ext = ti.name.partition(".")
                    data = tf.extractfile(ti).read()
                    entry = found.setdefault(key, {})
                    entry[{"jpg": "jpg", "mask.png": "png", "json": "meta"}[ext]] = data
    for entry in found.values():
        entry["meta"] = json.loads(entry["meta"])
    return {(e["meta"]["dataset"], k): e for k, e in found.items()}


@needs_ffcv
def test_synthetic_preprocessed_lake_round_trips(synthetic_lake):
    dirs, out, summary = synthetic_lake
    members = _members(dirs)
    assert summary["samples"] == len(members) == 10 and summary["failures"] == 0
    for item in fs.iter_beton(out):
        src = members[(item["dataset"], item["key"])]
        image, mask = expected(src)
        np.testing.assert_array_equal(item["image"], image, err_msg=item["key"])
        np.testing.assert_array_equal(item["mask"], mask, err_msg=item["key"])


@needs_ffcv
def test_same_samples_as_the_webdataset_loader(synthetic_lake, lake, beton):
    from pipeline.loading.loader import iter_samples
    for dirs, out in ((synthetic_lake[0], synthetic_lake[1]), (lake["dirs"], beton[0])):
        ffcv_items = {(i["dataset"], i["key"]): i for i in fs.iter_beton(out)}
        n = 0
        for s in iter_samples(dirs, kind="image"):  # no augmentation, shard order
            item = ffcv_items[(s["meta"]["dataset"], s["key"])]
            np.testing.assert_array_equal(item["image"], s["image"].permute(1, 2, 0).numpy())
            np.testing.assert_array_equal(item["mask"], s["mask"].numpy())
            n += 1
        assert n == len(ffcv_items)
