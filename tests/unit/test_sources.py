"""Official-layout readers: listing, loading, and every kind of bad input they must report."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.sources import SOURCES, get_source
from pipeline.sources.types import SkipLog, SourceError
from pipeline.sources.validate import check_same_size, load_image, load_mask

W, H = 32, 24


# -- fixture builders ---------------------------------------------------------------------------
def jpg(path: Path, size=(W, H), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, format="JPEG", quality=90)
    return path


def mask(path: Path, ids=(1,), size=(W, H), mode="P", void=False) -> Path:
    """A mask whose left columns hold the ids in turn (value 255 where ``mode == 'L'``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[1], size[0]), np.uint8)
    for i, v in enumerate(ids):
        a[:, i * 2:i * 2 + 2] = v
    if void:
        a[-1, :] = 255
    im = Image.fromarray(a)
    if mode == "P":
        im = im.convert("P")
        im.putpalette([c for i in range(256) for c in (i * 40 % 256, i * 90 % 256, i)])
    elif mode != "L":
        im = im.convert(mode)
    im.save(path, format="PNG")
    return path


def write_list(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{ln}\n" for ln in lines))
    return path


def davis2016_release(root: Path, seqs=None) -> Path:
    """The official 2016 release: frame-pair list lines (with the trailing space)."""
    seqs = seqs or {"train": {"bmx": 3}, "val": {"cows": 2}}
    for split, by_name in seqs.items():
        lines = []
        for name, n in by_name.items():
            for t in range(n):
                jpg(root / f"JPEGImages/480p/{name}/{t:05d}.jpg", seed=t)
                mask(root / f"Annotations/480p/{name}/{t:05d}.png", ids=(255,) if t else (),
                     mode="L")
                lines.append(f"/JPEGImages/480p/{name}/{t:05d}.jpg "
                             f"/Annotations/480p/{name}/{t:05d}.png ")
        write_list(root / f"ImageSets/480p/{split}.txt", lines)
    return root


def davis2017_package(root: Path) -> Path:
    for name, n in (("bear", 3), ("dogs", 2), ("dance", 3)):
        for t in range(n):
            jpg(root / f"JPEGImages/480p/{name}/{t:05d}.jpg", seed=t)
            if name != "dance" or t == 0:  # test-dev: only frame 0 annotated
                mask(root / f"Annotations/480p/{name}/{t:05d}.png", ids=(1, 2), void=True)
    write_list(root / "ImageSets/2017/train.txt", ["bear"])
    write_list(root / "ImageSets/2017/val.txt", ["dogs"])
    write_list(root / "ImageSets/2017/test-dev.txt", ["dance"])
    write_list(root / "ImageSets/2016/train.txt", ["bear"])
    write_list(root / "ImageSets/2016/val.txt", ["dogs"])
    return root


def msra(root: Path, ids=("10", "2")) -> Path:
    imgs = root / "MSRA10K_Imgs_GT" / "Imgs"
    for i in ids:
        jpg(imgs / f"{i}.jpg")
        mask(imgs / f"{i}.png", ids=(255,), mode="L")
    return root


def voc(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for i in ("2007_000032", "2007_000033", "2008_000001"):
        jpg(base / f"JPEGImages/{i}.jpg")
        mask(base / f"SegmentationObject/{i}.png", ids=(1, 2, 3), void=True)
        mask(base / f"SegmentationClass/{i}.png", ids=(15,), void=True)
    write_list(base / "ImageSets/Segmentation/train.txt", ["2007_000033", "2007_000032"])
    write_list(base / "ImageSets/Segmentation/val.txt", ["2008_000001"])
    return root


def vid(root: Path, lists=True, prefixed=False) -> Path:
    """The official lists (no split prefix; ``prefixed``: the ``train/``, ``val/`` form of later
    projects); snippet ``a`` is in two class files, as a snippet showing two classes is."""
    base = root / "ILSVRC2015"
    train = {"ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000": 3,
             "ILSVRC2015_VID_train_0001/ILSVRC2015_train_00010000": 2}
    for name, n in train.items():
        for t in range(n):
            jpg(base / f"Data/VID/train/{name}/{t:06d}.JPEG", seed=t)
    for t in range(2):
        jpg(base / f"Data/VID/val/ILSVRC2015_val_00000000/{t:06d}.JPEG", seed=t)
    if lists:
        a, b = list(train)
        tp, vp = ("train/", "val/") if prefixed else ("", "")
        write_list(base / "ImageSets/VID/train_1.txt", [f"{tp}{a} 1", f"{tp}{b} 1"])
        write_list(base / "ImageSets/VID/train_2.txt", [f"{tp}{a} 1"])
        write_list(base / "ImageSets/VID/val.txt",
                   [f"{vp}ILSVRC2015_val_00000000/{t:06d} {t + 1}" for t in range(2)])
    return root


def gray_jpg(path: Path, size=(W, H)) -> Path:
    """A lossy grayscale label: left half 200 (foreground), right half 10 (noise, below 15)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[1], size[0]), 10, np.uint8)
    a[:, : size[0] // 2] = 200
    Image.fromarray(a).save(path, format="JPEG", quality=95)
    return path


def yto(root: Path, frames=5, labels=(1, 3)) -> Path:
    shot = "aeroplane/data/0001/shots/001"
    for t in range(1, frames + 1):
        jpg(root / f"v1/{shot}/frame{t:04d}.jpg", seed=t)
    for t in labels:
        gray_jpg(root / f"youtube_masks/{shot}/labels/{t:05d}.jpg")
    jpg(root / "v1/cat/data/0002/shots/004/frame0001.jpg")  # an unlabelled shot: not listed
    return root


# -- registry ---------------------------------------------------------------------------------
def test_registry_names_and_unknown_name(tmp_path):
    assert set(SOURCES) == {"davis2016", "davis2017", "msra10k", "voc2012", "ilsvrc_vid",
                            "youtube_objects"}
    for name, cls in SOURCES.items():
        assert cls.name == name
    with pytest.raises(ValueError, match="valid names: davis2016, davis2017"):
        get_source("davis2018", tmp_path)
    with pytest.raises(SourceError, match="does not exist"):
        get_source("davis2016", tmp_path / "nope")
    with pytest.raises(ValueError, match="on_error"):
        get_source("davis2016", tmp_path, on_error="ignore")


# -- listing and loading each layout ------------------------------------------------------------
def test_davis2016_release(tmp_path):
    src = get_source("davis2016", davis2016_release(tmp_path))
    assert src.kind == "clip" and src.splits() == ["train", "val"]
    (seq,) = src.sequences("train")
    assert (seq.dataset, seq.split, seq.name, seq.mask_format) == ("davis2016", "train", "bmx",
                                                                   "binary")
    assert [f.index for f in seq.frames] == [0, 1, 2]
    assert [f.frame_id for f in seq.frames] == ["00000", "00001", "00002"]
    assert seq.annotated == seq.frames
    f = seq.frames[1]
    img, msk = src.load_image(f.image), src.load_mask(f.mask, seq.mask_format)
    assert img.data == f.image.read_bytes() and (img.width, img.height) == (W, H)
    assert msk.data == f.mask.read_bytes() and msk.objects == (1,)
    assert src.load_mask(seq.frames[0].mask, "binary").objects == ()
    assert src.validate_sequence(seq, decode=True)
    assert [s.name for s in src.sequences("val")] == ["cows"]


def test_davis2016_reads_the_2017_package_with_binary_masks(tmp_path):
    src = get_source("davis2016", davis2017_package(tmp_path))
    assert src.splits() == ["train", "val"]
    (seq,) = src.sequences("train")
    assert seq.name == "bear" and seq.mask_format == "binary" and len(seq.annotated) == 3
    assert src.load_mask(seq.frames[0].mask, seq.mask_format).objects == (1,)


def test_davis2017(tmp_path):
    src = get_source("davis2017", davis2017_package(tmp_path))
    assert src.splits() == ["test-dev", "train", "val"]
    (seq,) = src.sequences("train")
    assert seq.mask_format == "palette"
    assert src.load_mask(seq.frames[2].mask, "palette").objects == (1, 2)  # 255 void excluded
    (dance,) = src.sequences("test-dev")
    assert [f.mask is not None for f in dance.frames] == [True, False, False]
    assert len(dance.annotated) == 1


@pytest.mark.parametrize("sub", ["", "MSRA10K_Imgs_GT", "MSRA10K_Imgs_GT/Imgs"])
def test_msra10k_roots(tmp_path, sub):
    msra(tmp_path)
    src = get_source("msra10k", tmp_path / sub)
    assert src.kind == "image" and src.splits() == ["train"]
    items = src.images("train")
    assert [i.image_id for i in items] == ["10", "2"]
    assert items[0].mask_format == "binary" and items[0].mask.name == "10.png"
    assert src.load_mask(items[0].mask, "binary").objects == (1,)
    assert src.validate_image(items[0], decode=True)
    with pytest.raises(TypeError, match="use images"):
        src.sequences("train")


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc2012_roots(tmp_path, sub):
    voc(tmp_path)
    src = get_source("voc2012", tmp_path / sub)
    assert src.splits() == ["train", "val"]
    items = src.images("train")
    assert [i.image_id for i in items] == ["2007_000032", "2007_000033"]
    assert items[0].mask.parent.name == "SegmentationObject" and items[0].mask_format == "voc"
    m = src.load_mask(items[0].mask, "voc")
    assert m.objects == (1, 2, 3) and m.data == items[0].mask.read_bytes()


@pytest.mark.parametrize("prefixed", [False, True], ids=["official", "prefixed"])
def test_ilsvrc_vid(tmp_path, prefixed):
    src = get_source("ilsvrc_vid", vid(tmp_path, prefixed=prefixed))  # ROOT = parent of ILSVRC2015/
    assert src.splits() == ["train", "val"]
    train = src.sequences("train")
    assert [s.name for s in train] == ["ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000",
                                       "ILSVRC2015_VID_train_0001/ILSVRC2015_train_00010000"]
    assert [len(s.frames) for s in train] == [3, 2]
    assert train[0].mask_format is None and train[0].annotated == ()
    assert train[0].frames[2].frame_id == "000002"
    (val,) = src.sequences("val")
    assert val.name == "ILSVRC2015_val_00000000" and len(val.frames) == 2
    assert src.validate_sequence(val)


def test_ilsvrc_vid_missing_snippet_frames_are_named(tmp_path):
    base = vid(tmp_path) / "ILSVRC2015"
    lists = base / "ImageSets/VID"
    missing = "ILSVRC2015_VID_train_0002/ILSVRC2015_train_00020000"
    (lists / "train_3.txt").write_text(f"{missing} 1\n")
    with pytest.raises(SourceError, match=rf"{missing}.*listed in train_3\.txt, line 1.*no frames "
                                          r"folder.*Fix: restore Data/VID/train/") as e:
        get_source("ilsvrc_vid", tmp_path).sequences("train")
    assert e.value.reason == "missing_sequence"
    src = get_source("ilsvrc_vid", tmp_path, on_error="skip")
    assert len(src.sequences("train")) == 2 and src.skips.counts == {"missing_sequence": 1}

    (base / f"Data/VID/train/{missing}").mkdir(parents=True)  # folder without frames
    jpg(base / f"Data/VID/train/{missing}/000000.jpg")  # wrong extension: not a VID frame
    with pytest.raises(SourceError, match=r"has no frames \(%06d\.JPEG\); it holds 000000\.jpg"):
        get_source("ilsvrc_vid", tmp_path).sequences("train")

    # val.txt names frames: a listed frame missing from its snippet folder is named
    (base / "Data/VID/val/ILSVRC2015_val_00000000/000001.JPEG").unlink()
    with pytest.raises(SourceError, match=r"000001\.JPEG: frame 000001 of snippet "
                                          r"'ILSVRC2015_val_00000000' \(listed in val\.txt"):
        get_source("ilsvrc_vid", tmp_path).sequences("val")
    src = get_source("ilsvrc_vid", tmp_path, on_error="skip")
    assert src.sequences("val") == [] and src.skips.counts == {"missing_image": 1}


def test_ilsvrc_vid_bad_list_lines(tmp_path):
    base = vid(tmp_path) / "ILSVRC2015"
    cases = {"train_1.txt": ("val/ILSVRC2015_val_00000000 1", "does not name a snippet"),
             "train_2.txt": ("ILSVRC2015_train_00000000 1", "is not '<ILSVRC2015_VID_train_000K>"),
             "train_3.txt": ("ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000 one",
                             "has a non-numeric field")}
    for name, (line, words) in cases.items():
        vid(tmp_path)
        (base / "ImageSets/VID" / name).write_text(line + "\n")
        with pytest.raises(SourceError, match=rf"{name}: line 1 {words}.*Fix: restore the list "
                                              r"file.*ILSVRC2015_VID_train_0000/"):
            get_source("ilsvrc_vid", tmp_path).sequences("train")
        (base / "ImageSets/VID" / name).unlink()
    (base / "ImageSets/VID/val.txt").write_text("ILSVRC2015_val_00000000/000000.JPEG 1\n")
    with pytest.raises(SourceError, match=r"val\.txt: line 1 is not '<snippet>/<frame> <i>'"):
        get_source("ilsvrc_vid", tmp_path).sequences("val")
    src = get_source("ilsvrc_vid", tmp_path, on_error="skip")
    assert src.sequences("val") == [] and src.skips.counts == {"bad_list": 1}


def test_ilsvrc_vid_scans_folders_without_imagesets(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        src = get_source("ilsvrc_vid", vid(tmp_path, lists=False) / "ILSVRC2015")
        assert len(src.sequences("train")) == 2 and len(src.sequences("val")) == 1
    assert "scanning" in caplog.text


def test_youtube_objects(tmp_path):
    src = get_source("youtube_objects", yto(tmp_path))
    assert src.splits() == ["test"]
    (seq,) = src.sequences("test")
    assert seq.name == "aeroplane/0001/001" and seq.mask_format == "binary"
    assert [f.frame_id for f in seq.frames][:2] == ["frame0001", "frame0002"]
    assert [f.index for f in seq.annotated] == [0, 2]
    m = src.load_mask(seq.frames[0].mask, "binary")
    assert m.data.startswith(b"\x89PNG") and m.objects == (1,) and (m.width, m.height) == (W, H)
    assert m.data == src.load_mask(seq.frames[0].mask, "binary").data  # deterministic
    with Image.open(io.BytesIO(m.data)) as im:
        a = np.asarray(im)
        assert im.mode == "L" and set(np.unique(a)) == {0, 255}
        assert (a[:, : W // 2 - 2] == 255).all() and (a[:, W // 2 + 2:] == 0).all()
    assert src.validate_sequence(seq)


def test_youtube_objects_label_without_frame(tmp_path):
    yto(tmp_path, frames=3, labels=(1, 7))
    with pytest.raises(SourceError, match=r"00007\.jpg.*no frame frame0007\.jpg"):
        get_source("youtube_objects", tmp_path).sequences("test")
    src = get_source("youtube_objects", tmp_path, on_error="skip")
    assert src.sequences("test") == [] and src.skips.counts == {"missing_image": 1}


# -- the real DAVIS-2016 sample -----------------------------------------------------------------
def test_real_davis(real_davis):
    src = get_source("davis2016", real_davis)
    assert {"train", "val"} <= set(src.splits())
    (surf,) = src.sequences("train")
    (swan,) = src.sequences("val")
    assert (surf.name, len(surf.frames)) == ("surf", 55)
    assert (swan.name, len(swan.frames)) == ("blackswan", 50)
    assert [f.index for f in surf.frames] == list(range(55))
    f = surf.frames[54]
    assert f.frame_id == "00054"
    img, msk = src.load_pair(f.image, f.mask, "binary")
    assert img.data == f.image.read_bytes() and msk.data == f.mask.read_bytes()
    assert (img.width, img.height) == (854, 480) and msk.objects == ()  # the empty mask
    assert src.load_mask(surf.frames[0].mask, "binary").objects == (1,)
    assert src.load_image(swan.frames[0].image, decode=True).data == \
        swan.frames[0].image.read_bytes()


# -- bad input ----------------------------------------------------------------------------------
def test_missing_mask_davis2016(tmp_path):
    davis2016_release(tmp_path)
    (tmp_path / "Annotations/480p/bmx/00001.png").unlink()
    with pytest.raises(SourceError, match=r"bmx/00001\.png.*does not exist"):
        get_source("davis2016", tmp_path).sequences("train")
    src = get_source("davis2016", tmp_path, on_error="skip")
    (seq,) = src.sequences("train")  # the frame stays, unannotated: neighbours are intact
    assert [f.mask is None for f in seq.frames] == [False, True, False]
    assert src.skips.counts == {"missing_mask": 1}
    assert src.skips.as_dict()["files"][0].endswith("00001.png")


def test_missing_frame_drops_whole_sequence(tmp_path):
    davis2016_release(tmp_path, {"train": {"bmx": 3, "car": 2}})
    (tmp_path / "JPEGImages/480p/bmx/00001.jpg").unlink()
    with pytest.raises(SourceError, match=r"bmx/00001\.jpg.*does not exist"):
        get_source("davis2016", tmp_path).sequences("train")
    src = get_source("davis2016", tmp_path, on_error="skip")
    assert [s.name for s in src.sequences("train")] == ["car"]
    assert src.skips.counts == {"missing_image": 1}


def test_frame_gap_drops_whole_sequence(tmp_path):
    davis2017_package(tmp_path)
    (tmp_path / "JPEGImages/480p/bear/00001.jpg").unlink()
    with pytest.raises(SourceError, match=r"bear.*jump from 00000 to 00002"):
        get_source("davis2017", tmp_path).sequences("train")
    src = get_source("davis2017", tmp_path, on_error="skip")
    assert src.sequences("train") == [] and src.skips.counts == {"frame_gap": 1}


def test_missing_first_mask_davis2017(tmp_path):
    davis2017_package(tmp_path)
    (tmp_path / "Annotations/480p/dance/00000.png").unlink()
    with pytest.raises(SourceError, match=r"dance/00000\.png"):
        get_source("davis2017", tmp_path).sequences("test-dev")


def test_missing_mask_voc_and_msra(tmp_path):
    voc(tmp_path / "v")
    (tmp_path / "v/VOCdevkit/VOC2012/SegmentationObject/2007_000033.png").unlink()
    with pytest.raises(SourceError, match=r"SegmentationObject/2007_000033\.png.*does not exist"):
        get_source("voc2012", tmp_path / "v").images("train")
    src = get_source("voc2012", tmp_path / "v", on_error="skip")
    assert [i.image_id for i in src.images("train")] == ["2007_000032"]
    assert src.skips.counts == {"missing_mask": 1}

    msra(tmp_path / "m")
    (tmp_path / "m/MSRA10K_Imgs_GT/Imgs/2.png").unlink()
    with pytest.raises(SourceError, match=r"Imgs/2\.png.*does not exist"):
        get_source("msra10k", tmp_path / "m").images("train")
    skips = SkipLog()
    src = get_source("msra10k", tmp_path / "m", on_error="skip", skips=skips)
    assert [i.image_id for i in src.images("train")] == ["10"]
    assert skips.counts == {"missing_mask": 1} and skips.total == 1


def test_size_mismatch(tmp_path):
    davis2016_release(tmp_path)
    bad = mask(tmp_path / "Annotations/480p/bmx/00002.png", ids=(255,), mode="L", size=(W, H + 8))
    img_path = tmp_path / "JPEGImages/480p/bmx/00002.jpg"
    with pytest.raises(SourceError, match=rf"00002\.png.*{W}x{H + 8}.*00002\.jpg.*{W}x{H}"):
        check_same_size(img_path, load_image(img_path), bad, load_mask(bad, "binary"))
    src = get_source("davis2016", tmp_path)
    (seq,) = src.sequences("train")
    with pytest.raises(SourceError, match="00002.png"):
        src.validate_sequence(seq)
    src = get_source("davis2016", tmp_path, on_error="skip")
    assert src.validate_sequence(src.sequences("train")[0]) is False
    assert src.skips.counts == {"size_mismatch": 1}


def test_corrupt_jpegs(tmp_path):
    good = jpg(tmp_path / "good.jpg").read_bytes()
    cases = {
        "truncated.jpg": (good[: len(good) // 2], "truncated"),
        "garbage.jpg": (b"this is not an image at all" * 10, "not a JPEG"),
        "empty.jpg": (b"", "empty"),
        "header.jpg": (good[:4] + b"\xff\xd9", "unreadable JPEG"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=msg) as e:
            load_image(tmp_path / name)
        assert name in str(e.value) and "Fix:" in str(e.value) and e.value.reason == "bad_image"
    with pytest.raises(SourceError, match=r"missing\.jpg.*does not exist"):
        load_image(tmp_path / "missing.jpg")
    # padding after the EOI marker is accepted, and the bytes come back unchanged
    (tmp_path / "padded.jpg").write_bytes(good + b"\x00" * 100)
    assert load_image(tmp_path / "padded.jpg").data == good + b"\x00" * 100
    # a bogus Huffman table: the cheap check passes (markers, header), decoding does not
    bogus = bytearray(good)
    dht = bogus.index(b"\xff\xc4")
    bogus[dht + 5:dht + 21] = b"\xff" * 16  # code counts summing far over 256
    (tmp_path / "bogus.jpg").write_bytes(bytes(bogus))
    assert load_image(tmp_path / "bogus.jpg").width == W
    with pytest.raises(SourceError, match=r"bogus\.jpg.*unreadable JPEG"):
        load_image(tmp_path / "bogus.jpg", decode=True)


def test_corrupt_pngs(tmp_path):
    good = mask(tmp_path / "good.png").read_bytes()
    idat = good.index(b"IDAT")
    flipped = bytearray(good)
    flipped[idat + 6] ^= 0xFF
    cases = {"truncated.png": good[: len(good) - 20], "garbage.png": b"\x00" * 64,
             "empty.png": b"", "flipped.png": bytes(flipped),
             "jpeg.png": jpg(tmp_path / "x.jpg").read_bytes()}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError) as e:
            load_mask(tmp_path / name, "palette")
        assert name in str(e.value) and "Fix:" in str(e.value) and e.value.reason == "bad_mask"


def test_rgb_png_where_palette_expected(tmp_path):
    rgb = mask(tmp_path / "rgb.png", mode="RGB")
    for fmt in ("palette", "voc", "binary"):
        with pytest.raises(SourceError, match=r"rgb\.png: mask is a mode-RGB PNG") as e:
            load_mask(rgb, fmt)
        assert "Fix:" in str(e.value)
    assert load_mask(mask(tmp_path / "l.png", ids=(3,), mode="L"), "palette").objects == (3,)
    with pytest.raises(ValueError, match="mask_format"):
        load_mask(rgb, "colour")


def test_split_lists(tmp_path):
    davis2016_release(tmp_path)
    src = get_source("davis2016", tmp_path)
    with pytest.raises(SourceError, match=r"test\.txt: no list file.*train, val"):
        src.sequences("test")
    (tmp_path / "ImageSets/480p/val.txt").write_text("\n  \n")
    with pytest.raises(SourceError, match=r"val\.txt: split list for 'val' is empty"):
        src.sequences("val")
    (tmp_path / "ImageSets/480p/train.txt").write_text("bmx\n")
    with pytest.raises(SourceError, match=r"train\.txt: line 1 is not"):
        src.sequences("train")
    voc(tmp_path / "v")
    write_list(tmp_path / "v/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", [])
    with pytest.raises(SourceError, match=r"Segmentation/val\.txt.*empty"):
        get_source("voc2012", tmp_path / "v").images("val")
    with pytest.raises(SourceError, match="no split lists"):
        get_source("davis2017", tmp_path).splits()


def test_dot_in_name(tmp_path):
    davis2017_package(tmp_path)
    (tmp_path / "JPEGImages/480p/bear").rename(tmp_path / "JPEGImages/480p/my.bear")
    write_list(tmp_path / "ImageSets/2017/train.txt", ["my.bear"])
    with pytest.raises(SourceError, match=r"my\.bear.*contains a '\.'.*rename") as e:
        get_source("davis2017", tmp_path).sequences("train")
    assert "my_bear" in str(e.value)
    src = get_source("davis2017", tmp_path, on_error="skip")
    assert src.sequences("train") == [] and src.skips.counts == {"bad_name": 1}

    msra(tmp_path / "m", ids=("1", "a.b"))
    with pytest.raises(SourceError, match=r"a\.b\.jpg: name 'a\.b'"):
        get_source("msra10k", tmp_path / "m").images("train")


def test_source_error_pickles():
    err = SourceError("x/y.png", "broken", "fix it", "bad_mask")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.reason == "bad_mask"


# -- every reader over the synthetic writer's output --------------------------------------------
def test_readers_over_synthetic_datasets(tmp_path):
    from pipeline import synthetic
    spec = synthetic.SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=5, n_images=3,
                                   test_dev_sequences=1)
    roots = dict(synthetic.write_all(tmp_path, spec))
    assert set(roots) == set(SOURCES)
    if (roots["davis2017"] / "ImageSets" / "2016").is_dir():
        roots["davis2016 (2017 package)"] = roots["davis2017"]
    for label, root in roots.items():
        src = get_source(label.split()[0], root)
        assert src.splits(), label
        for split in src.splits():
            if src.kind == "clip":
                seqs = src.sequences(split)
                assert seqs and [s.name for s in seqs] == sorted(s.name for s in seqs)
                for s in seqs:
                    assert [f.index for f in s.frames] == list(range(len(s.frames)))
                    assert (s.mask_format is None) == (label == "ilsvrc_vid")
                    assert src.validate_sequence(s, decode=True), (label, s.name)
            else:
                items = src.images(split)
                assert items and all(src.validate_image(i, decode=True) for i in items)
        assert src.skips.total == 0, (label, src.skips.as_dict())
