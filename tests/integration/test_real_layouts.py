"""Real files of the official releases (``../shared/data/real_layouts``) through the readers,
preprocessing -> shards -> loader, inference's mask reader and the evaluation's. Skipped when
that folder is absent (fixture ``real_layouts``)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.lake.catalog import read_catalog, validate_set
from pipeline.loading.decode import decode_jpeg
from pipeline.loading.loader import iter_samples
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.sources import get_source
from pipeline.evaluation.davis import read_gt
from pipeline.inference.masks import read_mask_png
from pipeline.inference import object_ids

SNIPPET = "ILSVRC2015_val_00007026"


def _members(set_dir: Path) -> dict[str, bytes]:
    out = {}
    for t in sorted(set_dir.glob("*.tar")):
        with tarfile.open(t) as tar:
            out.update({m.name: tar.extractfile(m).read() for m in tar})
    return out


def test_vid_official_val_list_gives_byte_exact_clips_with_its_frame_ids(real_layouts, tmp_path):
    root = real_layouts  # the parent of ILSVRC2015/, as users may pass it
    lines = (root / "ILSVRC2015/ImageSets/VID/val.txt").read_text().split("\n")
    lines = [ln for ln in lines if ln]
    listed = [ln.split()[0].split("/")[1] for ln in lines]
    assert all(ln.startswith(f"{SNIPPET}/") for ln in lines)  # no "val/" prefix: the official form
    src = get_source("ilsvrc_vid", root)
    assert src.splits() == ["val"]
    (seq,) = src.sequences("val")
    assert seq.name == SNIPPET and [f.frame_id for f in seq.frames] == listed
    assert all(f.image.name.endswith(".JPEG") for f in seq.frames)

    (summary,) = run_preprocess(PreprocessConfig("ilsvrc_vid", root, tmp_path / "lake",
                                                 splits=["val"], shard_max_count=8,
                                                 progress=False))
    set_dir = Path(summary["dir"])
    assert validate_set(set_dir).ok
    rows = read_catalog(set_dir).to_pylist()
    assert sorted(r["key"] for r in rows) == [f"{SNIPPET}/{t:05d}" for t in range(len(listed))]
    members = _members(set_dir)
    for t, frame_id in enumerate(listed):
        key = f"{SNIPPET}/{t:05d}"
        meta = json.loads(members[f"{key}.json"])
        want = [listed[max(t - 4 + j, 0)] for j in range(5)]
        assert meta["frame_ids"] == want, key
        for j in range(5):
            assert members[f"{key}.{j:02d}.jpg"] == seq.frames[max(t - 4 + j, 0)].image.read_bytes()
        assert f"{key}.mask.png" not in members

    samples = list(iter_samples(set_dir, kind="clip"))
    assert len(samples) == len(listed)
    last = next(s for s in samples if s["key"] == f"{SNIPPET}/{len(listed) - 1:05d}")
    assert tuple(last["frames"].shape) == (5, 3, 720, 1280)
    expect = decode_jpeg(seq.frames[-1].image.read_bytes())
    assert torch.equal(last["frames"][-1], expect)


@pytest.fixture
def tennis(real_layouts, tmp_path) -> Path:
    """The real DAVIS-2017 tennis files, linked into a package root with the list file the
    sample lacks (ImageSets/2017/val.txt naming it)."""
    real = real_layouts / "DAVIS2017" / "DAVIS"
    root = tmp_path / "DAVIS2017"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("tennis\n")
    for sub in ("JPEGImages", "Annotations"):
        (root / sub).symlink_to(real / sub, target_is_directory=True)
    return root


def test_davis2017_tennis_objects_1_2_with_void_kept_out(tennis, tmp_path):
    png = tennis / "Annotations/480p/tennis/00000.png"
    with Image.open(png) as im:
        assert im.mode == "P"
        stored = np.array(im)
    assert set(np.unique(stored).tolist()) == {0, 1, 2, 255}

    src = get_source("davis2017", tennis)
    (seq,) = src.sequences("val")
    assert [f.frame_id for f in seq.frames] == ["00000", "00001"]
    for f in seq.frames:
        assert src.load_mask(f.mask, seq.mask_format).objects == (1, 2)

    (summary,) = run_preprocess(PreprocessConfig("davis2017", tennis, tmp_path / "lake",
                                                 splits=["val"], progress=False))
    set_dir = Path(summary["dir"])
    assert validate_set(set_dir).ok
    rows = {r["key"]: r for r in read_catalog(set_dir).to_pylist()}
    assert sorted(rows) == ["tennis/00000", "tennis/00001"]
    assert all(r["objects"] == [1, 2] for r in rows.values())
    members = _members(set_dir)
    for f in seq.frames:
        assert members[f"tennis/{f.index:05d}.mask.png"] == f.mask.read_bytes()  # source bytes
    for sample in iter_samples(set_dir, kind="clip"):
        f = seq.frames[int(sample["key"][-5:])]
        with Image.open(f.mask) as im:
            np.testing.assert_array_equal(sample["mask"].numpy(), np.array(im))  # ids, void kept

    # inference and evaluation read the same ids; void is never an object
    ids = read_mask_png(png)
    np.testing.assert_array_equal(ids, stored)
    assert object_ids(ids) == [1, 2]
    gt = read_gt(png, 2017)
    assert set(np.unique(gt).tolist()) == {0, 1, 2} and not (gt[stored == 255]).any()
