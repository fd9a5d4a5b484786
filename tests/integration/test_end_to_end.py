"""Every dataset: official layout (synthetic) -> shards -> loader, and the main job itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.lake.catalog import read_catalog, validate_set
from pipeline.loading.loader import iter_samples, make_loader
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.sources import get_source
from pipeline.synthetic import DATASETS, SyntheticSpec, write_dataset

REPO = Path(__file__).resolve().parents[2]
IMAGE_SETS = {"msra10k", "voc2012"}
SPEC = SyntheticSpec(n_sequences=2, n_frames=7, n_images=4, seed=3)


@pytest.mark.parametrize("dataset", DATASETS)
def test_source_to_shards_to_loader(dataset, tmp_path):
    root = write_dataset(dataset, tmp_path / "src", SPEC)
    summaries = run_preprocess(PreprocessConfig(dataset, root, tmp_path / "lake", shard_max_count=3,
                                                workers=2, progress=False))
    source = get_source(dataset, root)
    assert [s["split"] for s in summaries] == source.splits()
    kind = "image" if dataset in IMAGE_SETS else "clip"
    for s in summaries:
        set_dir = Path(s["dir"])
        assert s["catalog"] and validate_set(set_dir).ok
        rows = {r["key"]: r for r in read_catalog(set_dir).to_pylist()}
        if kind == "clip":
            # a clip holds frames t-4 .. t (PreprocessConfig's delta), the first repeated for t < 4
            files = {f"{q.name}/{f.index:05d}": [q.frames[max(f.index - 4 + i, 0)].image
                                                 for i in range(5)]
                     for q in source.sequences(s["split"])
                     for f in (q.annotated if q.mask_format else q.frames)}
        else:
            files = {it.image_id: [it.image] for it in source.images(s["split"])}
        assert set(rows) == set(files)

        # Decoded without augmentation (iter_samples' default), the loader gives back the
        # source's pixels (Pillow's decode of its files) and ids.
        n = 0
        for sample in iter_samples(set_dir, kind=kind):
            row = rows[sample["key"]]
            x = sample["frames"][-1] if kind == "clip" else sample["image"]
            assert x.dtype == torch.uint8 and tuple(x.shape) == (3, row["height"], row["width"])
            frames = sample["frames"] if kind == "clip" else sample["image"][None]
            assert len(frames) == len(files[sample["key"]])
            for got, path in zip(frames, files[sample["key"]]):
                with Image.open(path) as im:
                    want = np.array(im.convert("RGB"))
                assert np.array_equal(got.permute(1, 2, 0).numpy(), want), (sample["key"], path)
            if row["has_mask"]:
                m = sample["mask"].numpy()
                assert m.shape == (row["height"], row["width"])
                ids = sorted(set(np.unique(m).tolist()) - {0, 255})
                if row["mask_format"] == "binary":
                    assert ids == ([1] if row["objects"] else [])
                else:
                    assert ids == row["objects"]
            n += 1
        assert n == len(rows)

        # The training loader: augmented, batched, a fixed number of batches.
        loader = make_loader(set_dir, batch_size=2, num_workers=0, epoch_batches=2, kind=kind,
                             augment={"size": (40, 64), "hflip": 0.5, "rotate_deg": 10},
                             rank=0, world_size=1, seed=1)
        batches = list(loader)
        assert len(batches) == 2
        x = batches[0]["frames"] if kind == "clip" else batches[0]["image"]
        assert tuple(x.shape[-2:]) == (40, 64) and x.shape[0] == 2
        if kind == "clip":
            assert x.shape[1] == 5  # delta + 1 frames
        if dataset != "ilsvrc_vid":
            assert tuple(batches[0]["mask"].shape) == (2, 40, 64)
        assert loader.stats.corrupt == 0


def test_clip_frames_are_the_source_frames(tmp_path):
    """Frame j of clip t is frame max(t-4+j, 0) of the sequence, byte for byte."""
    root = write_dataset("ilsvrc_vid", tmp_path / "src", SPEC)
    run_preprocess(PreprocessConfig("ilsvrc_vid", root, tmp_path / "lake", splits=["val"],
                                    progress=False))
    seq = get_source("ilsvrc_vid", root).sequences("val")[0]
    import tarfile

    members = {}
    for t in sorted((tmp_path / "lake" / "ilsvrc_vid" / "val").glob("*.tar")):
        with tarfile.open(t) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar})
    for f in seq.frames:
        key = f"{seq.name}/{f.index:05d}"
        meta = json.loads(members[f"{key}.json"])
        assert meta["frame_ids"][-1] == f.frame_id and f"{key}.mask.png" not in members
        for j in range(5):
            src = seq.frames[max(f.index - 4 + j, 0)].image
            assert members[f"{key}.{j:02d}.jpg"] == src.read_bytes()


def test_youtube_objects_masks_are_thresholded_pngs(tmp_path):
    root = write_dataset("youtube_objects", tmp_path / "src", SPEC)
    run_preprocess(PreprocessConfig("youtube_objects", root, tmp_path / "lake", progress=False))
    seq = get_source("youtube_objects", root).sequences("test")[0]
    frame = seq.annotated[0]
    sample = next(s for s in iter_samples(tmp_path / "lake" / "youtube_objects" / "test")
                  if s["key"] == f"{seq.name}/{frame.index:05d}")
    label = np.asarray(Image.open(frame.mask).convert("L")) > 15
    assert np.array_equal(sample["mask"].numpy() > 0, label)


@pytest.mark.slow
def test_main_job_end_to_end(tmp_path):
    """What `bash scripts/main.sh` runs, on its default config (output moved to tmp)."""
    r = subprocess.run([sys.executable, str(REPO / "launch" / "main.py"), f"out={tmp_path}",
                        "sample_data.frames=7"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["ok"] and not report["validation_errors"]
    assert {c["dataset"] for c in report["catalog"]} == set(DATASETS)
    assert all(c["complete"] and c["samples"] > 0 for c in report["catalog"])
    assert len(report["loaders"]) == len(report["catalog"])
    assert all(entry["batches"] == 2 for entry in report["loaders"])
    r = subprocess.run([sys.executable, str(REPO / "launch" / "main.py"), "lake.shard_max_cnt=3"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "shard_max_cnt" in r.stderr
