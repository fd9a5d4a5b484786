"""The synthetic datasets: official layouts (docs/layouts.md), content, determinism, CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.synthetic import spec as synthetic_spec
from pipeline.synthetic import (DATASETS, PRESETS, SyntheticSpec, scene_for, sequence_names,
                                     write_all, write_dataset)

REPO = Path(__file__).resolve().parents[2]
SPEC = SyntheticSpec()  # tiny: 128x72
W, H = SPEC.size


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("synth"), SPEC)


def _img(path: Path) -> Image.Image:
    im = Image.open(path)
    im.load()
    return im


def _arr(path: Path) -> np.ndarray:
    """Pixel values; a grey + alpha (LA) mask as its grey channel."""
    im = _img(path)
    a = np.array(im)
    return a[..., 0] if im.mode == "LA" else a


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check_jpeg(path: Path, size=(W, H), mode="RGB") -> None:
    im = _img(path)
    assert im.format == "JPEG", path
    assert im.mode == mode and im.size == size, (path, im.mode, im.size)


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


# ------------------------------------------------------------------------------------------------
def test_presets_and_spec():
    assert PRESETS == {"tiny": (128, 72), "full": (854, 480)}
    assert SyntheticSpec(size="full").size == (854, 480)
    assert SyntheticSpec(size="100x60").size == (100, 60)
    with pytest.raises(ValueError):
        SyntheticSpec(n_objects=(3, 1))
    with pytest.raises(ValueError):
        SyntheticSpec(size="huge")
    with pytest.raises(ValueError):
        SyntheticSpec(n_frames=0)


def test_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError) as e:
        write_dataset("davis2019", tmp_path / "x")
    for name in DATASETS:
        assert name in str(e.value)
    assert not (tmp_path / "x").exists()


def test_write_all_roots(tiny):
    assert set(tiny) == set(DATASETS)
    for name, root in tiny.items():
        assert root.is_dir() and root.name == name
    # no dots in any sequence name or image id (only in file extensions)
    for root in tiny.values():
        for p in root.rglob("*"):
            rel = p.relative_to(root)
            parts = rel.parts[:-1] if p.is_file() else rel.parts
            assert all("." not in part for part in parts), rel
            if p.is_file():
                assert p.name.count(".") == 1, rel


def test_davis2016_layout(tiny):
    root = tiny["davis2016"]
    sets = root / "ImageSets" / "480p"
    lines = {s: (sets / f"{s}.txt").read_text() for s in ("train", "val", "trainval")}
    pat = re.compile(r"^/JPEGImages/480p/([a-z]+(?:-[a-z]+)*)/(\d{5})\.jpg "
                     r"/Annotations/480p/\1/\2\.png $")
    seqs: dict[str, set[str]] = {}
    for split, text in lines.items():
        assert text.endswith(" \n")
        rows = text.split("\n")[:-1]
        assert rows
        for row in rows:
            m = pat.match(row)
            assert m, repr(row)
            jpg, png = row.strip().split(" ")
            assert (root / jpg.lstrip("/")).is_file() and (root / png.lstrip("/")).is_file()
            if split != "trainval":
                seqs.setdefault(split, set()).add(m.group(1))
    assert seqs["train"].isdisjoint(seqs["val"])
    assert len(seqs["train"]) == len(seqs["val"]) == SPEC.n_sequences
    trainval = lines["trainval"].split("\n")[:-1]
    both = lines["train"].split("\n")[:-1] + lines["val"].split("\n")[:-1]
    assert sorted(trainval) == sorted(both)

    # db_info.yml: the real file's structure, only our sequences
    text = (root / "Annotations" / "db_info.yml").read_text()
    assert text.startswith("attributes: [AC, BC, CS, DB, DEF, EA, FM, HO, IO, LR, MB, OCC, OV, ROT,"
                           " SC, SV]\nsets: [training,test]\nsequences:\n- attributes: [")
    info = yaml.safe_load(text)
    assert set(info) == {"attributes", "sets", "sequences"}
    assert info["sets"] == ["training", "test"]
    by_name = {s["name"]: s for s in info["sequences"]}
    assert set(by_name) == seqs["train"] | seqs["val"]
    n_frames = set()
    la_masks = []
    for name, s in by_name.items():
        assert set(s) == {"attributes", "name", "num_frames", "set", "eval_t"}
        assert s["set"] == ("training" if name in seqs["train"] else "test")
        assert isinstance(s["eval_t"], bool) and set(s["attributes"]) <= set(info["attributes"])
        frames = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))
        masks = sorted((root / "Annotations" / "480p" / name).glob("*.png"))
        assert s["num_frames"] == len(frames) == len(masks)
        assert [f.stem for f in frames] == [f"{i:05d}" for i in range(len(frames))]
        n_frames.add(len(frames))
        for f, mk in zip(frames, masks):
            _check_jpeg(f)
            im = _img(mk)
            assert im.format == "PNG" and im.mode in ("L", "LA") and im.size == (W, H)
            values = np.array(im)
            if im.mode == "LA":  # the release's quirk: grey + an all-255 alpha channel
                la_masks.append(mk)
                assert (values[..., 1] == 255).all()
                values = values[..., 0]
            assert set(np.unique(values)) <= {0, 255}
        assert np.array(_img(masks[0])).max() == 255  # the object is there on frame 0
    assert len(n_frames) > 1  # frame counts vary per sequence
    # exactly one annotation is LA, in the train split (as Annotations/480p/bear/00077.png)
    assert len(la_masks) == 1 and la_masks[0].parent.name in seqs["train"]


def test_davis2016_matches_real_formatting(tiny, real_davis):
    ours = (tiny["davis2016"] / "ImageSets" / "480p" / "train.txt").read_text().split("\n")[0]
    real = (real_davis / "ImageSets" / "480p" / "train.txt").read_text().split("\n")[0]
    norm = re.compile(r"/480p/[^/]+/")
    assert norm.sub("/480p/S/", ours) == norm.sub("/480p/S/", real)
    real_info = yaml.safe_load((real_davis / "Annotations" / "db_info.yml").read_text())
    our_info = yaml.safe_load((tiny["davis2016"] / "Annotations" / "db_info.yml").read_text())
    assert set(real_info) == set(our_info)
    assert our_info["attributes"] == real_info["attributes"]
    assert our_info["sets"] == real_info["sets"]
    assert set(real_info["sequences"][0]) == set(our_info["sequences"][0])
    real_mask = _img(next((real_davis / "Annotations" / "480p").glob("*/00000.png")))
    ours_mask = _img(next((tiny["davis2016"] / "Annotations" / "480p").glob("*/00000.png")))
    assert real_mask.mode == ours_mask.mode == "L"


def test_davis2017_layout(tiny):
    root = tiny["davis2017"]
    lists = {f"{y}/{s}": (root / "ImageSets" / y / f"{s}.txt").read_text().split()
             for y in ("2017", "2016") for s in ("train", "val")}
    assert not (set(lists["2017/train"]) & set(lists["2017/val"]))
    assert set(lists["2016/train"]) <= set(lists["2017/train"])
    assert set(lists["2016/val"]) <= set(lists["2017/val"])
    assert lists["2016/train"] or lists["2016/val"]
    assert sequence_names("davis2017", SPEC) == {"train": lists["2017/train"],
                                                 "val": lists["2017/val"]}
    max_ids = {}
    for seq in lists["2017/train"] + lists["2017/val"]:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", seq)
        frames = sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        masks = sorted((root / "Annotations" / "480p" / seq).glob("*.png"))
        assert [f.stem for f in frames] == [m.stem for m in masks]
        ids = set()
        for f, mk in zip(frames, masks):
            _check_jpeg(f)
            im = _img(mk)
            assert im.mode == "P" and im.size == (W, H)
            assert im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]  # DAVIS / VOC palette
            ids |= set(np.unique(np.array(im)).tolist())
        ids.discard(0)
        void = 255 in ids
        ids.discard(255)
        first = set(np.unique(_arr(masks[0])).tolist()) - {0, 255}
        assert ids == first == set(range(1, len(ids) + 1)), seq  # ids 1..N, all on frame 0
        assert void == (len(ids) > 1), seq  # void (255) along an object in multi-object ones
        max_ids[seq] = len(ids)
    for seq in lists["2016/train"] + lists["2016/val"]:
        assert max_ids[seq] == 1  # the 2016 subset is single-object
    assert max(max_ids.values()) >= 2


def test_davis2017_test_dev(tmp_path):
    spec = SyntheticSpec(n_sequences=1, n_frames=3, test_dev_sequences=1)
    root = write_dataset("davis2017", tmp_path, spec)
    (seq,) = (root / "ImageSets" / "2017" / "test-dev.txt").read_text().split()
    assert len(list((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))) >= 2
    assert [p.name for p in (root / "Annotations" / "480p" / seq).iterdir()] == ["00000.png"]


def test_davis2017_occlusion_and_pixel_consistency(tiny):
    root = tiny["davis2017"]
    found = False
    for split, names in sequence_names("davis2017", SPEC).items():
        for i, seq in enumerate(names):
            scene = scene_for("davis2017", SPEC, split, i)
            n = len(sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg")))
            assert scene.n_frames == n
            for t in range(n):
                r = scene.render(t, amodal=True)
                written = _arr(root / "Annotations" / "480p" / seq / f"{t:05d}.png")
                void = written == 255  # only on background pixels touching an object
                assert not (r.labels[void]).any()
                assert all(_touches_object(r.labels, y, x) for y, x in zip(*np.nonzero(void)))
                np.testing.assert_array_equal(np.where(void, 0, written), r.labels)  # as painted
                for k, full in enumerate(r.amodal):
                    visible = r.owner == k + 1
                    assert not (visible & ~full).any()
                    if visible.any() and (full & ~visible).any():
                        found = True  # partly hidden behind another object
    assert found


def test_objects_move_and_deform(tiny):
    root = tiny["davis2016"]
    for seq_dir in sorted((root / "Annotations" / "480p").iterdir()):
        masks = [_arr(p) > 0 for p in sorted(seq_dir.glob("*.png"))]
        masks = [m for m in masks if m.any()]
        cents = np.array([_centroid(m) for m in masks])
        assert np.abs(cents - cents[0]).max() > 1.0, seq_dir.name
        assert len({int(m.sum()) for m in masks}) > 1, seq_dir.name  # the visible area changes
    # the camera pans: consecutive frames are not just the same background
    scene = scene_for("davis2017", SPEC, "train", 0)
    assert scene.camera_motion >= 1
    a = scene.render(0).image.astype(int)
    b = scene.render(scene.n_frames - 1).image.astype(int)
    assert np.abs(a - b).mean() > 2


def test_images_are_textured_not_flat(tiny):
    f = next((tiny["davis2016"] / "JPEGImages" / "480p").glob("*/00000.jpg"))
    img = _arr(f).astype(float)
    assert img.std() > 10
    assert np.abs(np.diff(img, axis=1)).mean() > 1  # local detail


def test_msra10k_layout(tiny):
    base = tiny["msra10k"] / "MSRA10K_Imgs_GT" / "Imgs"
    jpgs = sorted(base.glob("*.jpg"))
    assert len(jpgs) == SPEC.n_images
    assert {p.stem for p in jpgs} == {p.stem for p in base.glob("*.png")}
    for p in jpgs:
        assert p.stem.isdigit()
        _check_jpeg(p)
        mk = _img(p.with_suffix(".png"))
        assert mk.mode == "L" and mk.size == (W, H)
        values = set(np.unique(np.array(mk)).tolist())
        assert values == {0, 255}


def test_voc2012_layout(tiny):
    base = tiny["voc2012"] / "VOCdevkit" / "VOC2012"
    sets = base / "ImageSets" / "Segmentation"
    ids = {s: (sets / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval")}
    assert len(ids["train"]) == len(ids["val"]) == SPEC.n_images
    assert not set(ids["train"]) & set(ids["val"])
    assert ids["trainval"] == sorted(ids["train"] + ids["val"])
    void_seen = False
    for image_id in ids["trainval"]:
        assert re.fullmatch(r"20\d\d_\d{6}", image_id)
        _check_jpeg(base / "JPEGImages" / f"{image_id}.jpg")
        obj_im = _img(base / "SegmentationObject" / f"{image_id}.png")
        cls_im = _img(base / "SegmentationClass" / f"{image_id}.png")
        assert obj_im.mode == cls_im.mode == "P" and obj_im.size == cls_im.size == (W, H)
        assert obj_im.getpalette()[255 * 3:256 * 3] == [224, 224, 192]
        obj, cls = np.array(obj_im), np.array(cls_im)
        np.testing.assert_array_equal(obj == 255, cls == 255)  # the same void band
        void_seen |= bool((obj == 255).any())
        inst = set(np.unique(obj).tolist()) - {0, 255}
        assert inst and inst <= set(range(1, len(inst) + 1)) | set(range(1, 51))
        assert set(np.unique(cls).tolist()) <= set(range(21)) | {255}
        for k in inst:  # one class per instance
            classes = np.unique(cls[obj == k])
            assert len(classes) == 1 and 1 <= classes[0] <= 20
        # the void band surrounds every object: no object pixel touches background directly
        fg = (obj != 0) & (obj != 255)
        bg = obj == 0
        assert not (fg[:, 1:] & bg[:, :-1]).any() and not (fg[:, :-1] & bg[:, 1:]).any()
        assert not (fg[1:] & bg[:-1]).any() and not (fg[:-1] & bg[1:]).any()
    assert void_seen


def _touches_object(labels: np.ndarray, y: int, x: int) -> bool:
    return bool(labels[max(0, y - 1):y + 2, max(0, x - 1):x + 2].any())


def test_ilsvrc_vid_layout(tiny):
    root = tiny["ilsvrc_vid"]
    sets = root / "ImageSets" / "VID"
    train_lists = sorted(sets.glob("train_*.txt"))
    assert train_lists and all(re.fullmatch(r"train_([1-9]|[12]\d|30)\.txt", p.name)
                               for p in train_lists)
    classes: dict[str, set[int]] = {}
    for p in train_lists:
        k = int(p.stem.split("_")[1])
        lines = p.read_text().splitlines()
        assert lines  # the release's class files are never empty
        for line in lines:
            # the official form: the snippet under its folder, no "train/" prefix, field 1
            m = re.fullmatch(r"(ILSVRC2015_VID_train_000[0-3]/ILSVRC2015_train_\d{8}) 1", line)
            assert m, line
            snippet = root / "Data" / "VID" / "train" / m.group(1)
            assert snippet.is_dir()
            classes.setdefault(m.group(1), set()).add(k)
    assert len(classes) == SPEC.n_sequences
    assert any(len(c) > 1 for c in classes.values())  # a snippet in two class files (dedupe)
    for snippet, ks in classes.items():
        frames = sorted((root / "Data" / "VID" / "train" / snippet).iterdir())
        assert [f.name for f in frames] == [f"{i:06d}.JPEG" for i in range(len(frames))]
        for f in frames:
            _check_jpeg(f)
        # every class file naming the snippet has an object of that class in its XMLs
        xml = "".join(p.read_text() for p in
                      sorted((root / "Annotations" / "VID" / "train" / snippet).glob("*.xml")))
        assert {synthetic_spec.VID_WNIDS[k - 1] for k in ks} == set(re.findall(r"<name>(\w+)</name>",
                                                                          xml))
    val = (sets / "val.txt").read_text().splitlines()
    for i, line in enumerate(val, start=1):
        # the official form: one frame per line, no "val/" prefix, a running 1-based index
        m = re.fullmatch(r"(ILSVRC2015_val_\d{8})/(\d{6}) (\d+)", line)
        assert m and int(m.group(3)) == i, line
        _check_jpeg(root / "Data" / "VID" / "val" / m.group(1) / f"{m.group(2)}.JPEG")
    assert len({line.split("/")[0] for line in val}) == SPEC.n_sequences
    assert len(list((root / "Data" / "VID" / "val").glob("*/*.JPEG"))) == len(val)


def test_ilsvrc_vid_matches_the_real_files(tiny, real_layouts):
    """List lines, XML shape (child order, no header, folder per split) as the real release."""
    real = real_layouts / "ILSVRC2015"
    norm = re.compile(r"\d+")
    ours_val = (tiny["ilsvrc_vid"] / "ImageSets/VID/val.txt").read_text().splitlines()[0]
    real_val = (real / "ImageSets/VID/val.txt").read_text().splitlines()[0]
    assert norm.sub("0", ours_val) == norm.sub("0", real_val)
    real_xml = next((real / "Annotations/VID/val").glob("*/000000.xml")).read_text()
    ours_xml = next((tiny["ilsvrc_vid"] / "Annotations/VID/val").glob("*/000000.xml")).read_text()

    def shape(text: str) -> tuple[list[str], list[str]]:
        """The tags before the first <object>, and those of the first object, in order."""
        head, _, rest = text.partition("<object>")
        return re.findall(r"<(/?\w+)>", head), re.findall(r"<(/?\w+)>", rest.split("</object>")[0])
    assert shape(ours_xml) == shape(real_xml)
    assert shape(real_xml)[1][4:9] == ["bndbox", "xmax", "/xmax", "xmin", "/xmin"]
    assert not real_xml.startswith("<?xml") and not ours_xml.startswith("<?xml")
    assert real_xml.endswith("</annotation>\n") and ours_xml.endswith("</annotation>\n")
    # val <folder> is the snippet alone
    assert re.search(r"<folder>ILSVRC2015_val_\d{8}</folder>", ours_xml)
    assert next((real / "Data/VID/val").glob("*/*")).suffix == ".JPEG"


def test_youtube_objects_layout_and_threshold(tiny):
    root = tiny["youtube_objects"]
    names = sequence_names("youtube_objects", SPEC)["test"]
    assert len(names) == SPEC.n_sequences
    n_labels = 0
    for i, seq in enumerate(names):
        cls, video, shot = seq.split("/")
        assert cls in synthetic_spec.YTO_CLASSES
        frames = sorted((root / "v1" / cls / "data" / video / "shots" / shot).glob("*.jpg"))
        assert [f.name for f in frames] == [f"frame{k:04d}.jpg" for k in range(1, len(frames) + 1)]
        labels = sorted((root / "youtube_masks" / cls / "data" / video / "shots" / shot / "labels")
                        .glob("*.jpg"))
        assert [int(p.stem) for p in labels] == list(range(1, len(frames) + 1, SPEC.label_every))
        scene = scene_for("youtube_objects", SPEC, "test", i)
        for p in labels:
            assert len(p.stem) == 5
            _check_jpeg(frames[int(p.stem) - 1])
            _check_jpeg(p, mode="L")
            fg = _arr(p) > 15
            truth = scene.render(int(p.stem) - 1).labels > 0
            assert truth.any()
            iou = (fg & truth).sum() / (fg | truth).sum()
            assert iou > 0.95, (p, iou)
            n_labels += 1
    assert n_labels >= SPEC.n_sequences


def test_label_every_is_configurable(tmp_path):
    spec = SyntheticSpec(n_sequences=1, n_frames=6, label_every=2)
    root = write_dataset("youtube_objects", tmp_path, spec)
    labels = sorted(p.stem for p in root.rglob("labels/*.jpg"))
    assert labels == ["00001", "00003", "00005"]


def test_deterministic_and_seed_dependent(tiny, tmp_path):
    again = write_all(tmp_path / "again", SPEC)
    for name in DATASETS:
        a, b = _files(tiny[name]), _files(again[name])
        assert a.keys() == b.keys(), name
        assert all(a[k] == b[k] for k in a), name
    other = write_all(tmp_path / "seed1", SyntheticSpec(seed=1))
    for name in DATASETS:
        a, c = _files(tiny[name]), _files(other[name])
        images = [k for k in a if k.lower().endswith((".jpg", ".jpeg"))]
        assert images
        differ = [k for k in images if k not in c or a[k] != c[k]]
        assert len(differ) == len(images), name


def test_full_size_and_odd_sizes(tmp_path):
    spec = SyntheticSpec(size="full", n_sequences=1, n_frames=2)
    root = write_dataset("davis2016", tmp_path / "full", spec)
    for f in root.glob("JPEGImages/480p/*/*.jpg"):
        _check_jpeg(f, size=(854, 480))
        mask = root / "Annotations" / "480p" / f.parent.name / f"{f.stem}.png"
        assert _img(mask).size == (854, 480)
    odd = SyntheticSpec(size=(131, 75), n_sequences=1, n_frames=2, n_images=1)
    for name in DATASETS:
        r = write_dataset(name, tmp_path / "odd" / name, odd)
        for f in r.rglob("*"):
            if f.suffix in (".jpg", ".JPEG", ".png"):
                assert _img(f).size == (131, 75), f


def test_cli(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "launch/make_synthetic.py", "--out", str(out), "--datasets",
         "davis2016", "voc2012", "--size", "64x48", "--sequences", "1", "--frames", "3", "--images",
         "2", "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("davis2016") and str(out / "davis2016") in lines[0]
    assert "sequences=2" in lines[0]
    assert lines[1].startswith("voc2012") and "images=4" in lines[1]
    img = next((out / "voc2012").rglob("JPEGImages/*.jpg"))
    assert _img(img).size == (64, 48)
    bad = subprocess.run([sys.executable, "launch/make_synthetic.py", "--out", str(out),
                          "--datasets", "coco"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "davis2016" in bad.stderr
