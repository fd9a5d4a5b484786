"""Shards and lakes for tests.

* The one hand-made shard builder: :func:`write_shard` writes tars independently of the
  pipeline's writer, in the shard contract's layout (``pipeline/lake/contract.py``:
  ``<key>.<ext>`` members, real JPEGs, palette PNG masks, ``NNNNN_stats.json``); the sample
  makers (:func:`clip_sample`, :func:`image_sample`) and set writers (:func:`write_clip_set`,
  :func:`write_image_set`) fill it.
* Lakes made by the real preprocessing job: :func:`build_train_lake` (what the tiny training
  configs read; ``conftest.py``'s ``train_lake`` fixture), :data:`PREPROCESS` (its command) and
  :func:`lake_files` (a lake's bytes, for byte-for-byte comparisons).
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PREPROCESS = [sys.executable, str(REPO / "launch" / "preprocess.py")]
TRAIN_DATASETS = ("ilsvrc_vid", "msra10k", "voc2012", "davis2016")


# -- lakes of the real preprocessing job ---------------------------------------------------------

def build_train_lake(root: Path, size=(64, 48)) -> Path:
    """A small data lake from the synthetic datasets: what the tiny training configs read.
    Every set has >= 2 shards (two ranks each read their own)."""
    from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
    from pipeline.synthetic import SyntheticSpec, write_dataset

    spec = SyntheticSpec(size=size, n_sequences=2, n_frames=8, n_images=8, seed=0)
    lake = root / "shards"
    for name in TRAIN_DATASETS:
        src = write_dataset(name, root / "sources" / name, spec)
        list(run_preprocess(PreprocessConfig(dataset=name, src=src, out=lake, delta=4,
                                             shard_max_count=4, workers=1, progress=False)))
    return lake


def lake_files(root: Path) -> dict[str, bytes]:
    """Every file of a lake except the stats files' timings, for byte comparisons."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name.endswith("_stats.json"):
            doc = json.loads(data)
            doc.pop("seconds")
            data = json.dumps(doc, sort_keys=True).encode()
        out[p.relative_to(root).as_posix()] = data
    return out


# -- the hand-made shard builder -----------------------------------------------------------------

def write_shard(folder: Path, index: int, samples: list[dict], *, finished: bool = True,
                extra_members: dict[str, bytes] | None = None) -> Path:
    """``NNNNN.tar`` of ``samples`` (dicts with ``key`` and ``members``: extension -> bytes), with
    ``NNNNN_stats.json`` when ``finished`` (no parquet: the loader does not need it).
    ``extra_members``: raw member name -> bytes, appended after the samples."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index:05d}.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        def add(name: str, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
        for s in samples:
            for ext, data in s["members"].items():
                add(f"{s['key']}.{ext}", data)
        for name, data in (extra_members or {}).items():
            add(name, data)
    if finished:
        stats = {"count": len(samples), "bytes": path.stat().st_size, "failures": 0,
                 "seconds": 0.0}
        (folder / f"{index:05d}_stats.json").write_text(json.dumps(stats))
    return path


PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192]


def jpeg_bytes(arr: np.ndarray, quality: int = 95) -> bytes:
    bio = io.BytesIO()
    Image.fromarray(arr).save(bio, format="JPEG", quality=quality)
    return bio.getvalue()


def png_bytes(arr: np.ndarray, palette: bool = True) -> bytes:
    """A palette (mode P, ids as indices) or greyscale (mode L) PNG of a uint8 [H, W] array."""
    h, w = arr.shape
    im = Image.frombytes("P" if palette else "L", (w, h), np.ascontiguousarray(arr).tobytes())
    if palette:
        im.putpalette(PALETTE)
    bio = io.BytesIO()
    im.save(bio, format="PNG")
    return bio.getvalue()


def palette_mask(h: int, w: int, shift: int = 0) -> np.ndarray:
    """Ids 1 (left block) and 2 (right block), a 255 void frame around object 1, 0 elsewhere."""
    m = np.zeros((h, w), np.uint8)
    m[h // 4: h // 2, 2 + shift: w // 3 + shift] = 255
    m[h // 4 + 1: h // 2 - 1, 3 + shift: w // 3 - 1 + shift] = 1
    m[h // 2: 3 * h // 4, w // 2: w - 4] = 2
    return m


def frame_image(h: int, w: int, value: int, seed: int = 0) -> np.ndarray:
    """An asymmetric frame: a bright red left third (intensity ``value``), a dark rest."""
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 20, (h, w, 3))).astype(np.uint8)
    a[:, : w // 3, 0] = value
    return a


def clip_sample(seq: str, t: int, *, T: int = 3, h: int = 48, w: int = 64,
                mask_format: str | None = "palette", dataset: str = "davis2017") -> dict:
    """A clip sample (``T`` JPEG frames, a mask of the last, its json) for :func:`write_shard`."""
    members: dict[str, bytes] = {}
    for i in range(T):
        members[f"{i:02d}.jpg"] = jpeg_bytes(frame_image(h, w, 200 + 10 * i, seed=t * 10 + i))
    if mask_format == "palette":
        members["mask.png"] = png_bytes(palette_mask(h, w))
    elif mask_format == "binary":
        m = (palette_mask(h, w) > 0).astype(np.uint8) * 255
        members["mask.png"] = png_bytes(m, palette=False)
    meta = {"dataset": dataset, "split": "train", "sequence": seq,
            "frame_ids": [f"{max(t - T + 1 + i, 0):05d}" for i in range(T)], "height": h,
            "width": w, "objects": [1, 2] if mask_format else [], "mask_format": mask_format}
    members["json"] = json.dumps(meta).encode()
    return {"key": f"{seq}/{t:05d}", "members": members}


def image_sample(image_id: str, *, h: int = 40, w: int = 56, mask_format: str = "binary") -> dict:
    """An image sample (MSRA10K-like binary or VOC-like palette mask) for :func:`write_shard`."""
    arr = frame_image(h, w, 230, seed=zlib.crc32(image_id.encode()))
    if mask_format == "binary":
        mask = png_bytes((palette_mask(h, w) > 0).astype(np.uint8) * 255, palette=False)
    else:
        mask = png_bytes(palette_mask(h, w))
    meta = {"dataset": "msra10k" if mask_format == "binary" else "voc2012", "split": "train",
            "sequence": image_id, "height": h, "width": w, "objects": [1],
            "mask_format": mask_format}
    return {"key": image_id, "members": {"jpg": jpeg_bytes(arr), "mask.png": mask,
                                         "json": json.dumps(meta).encode()}}


def write_clip_set(folder: Path, n_shards: int, per_shard: int = 4, **kw) -> list[Path]:
    """``n_shards`` finished shards of clip samples, one sequence per shard."""
    paths = []
    for s in range(n_shards):
        seq = f"seq{s:02d}"
        paths.append(write_shard(folder, s, [clip_sample(seq, t, **kw) for t in range(per_shard)]))
    return paths


def write_image_set(folder: Path, n_shards: int, per_shard: int = 4, prefix: str = "img",
                    **kw) -> list[Path]:
    """``n_shards`` finished shards of image samples."""
    return [write_shard(folder, s, [image_sample(f"{prefix}_{s:02d}_{i:03d}", **kw)
                                    for i in range(per_shard)]) for s in range(n_shards)]


def keys_of(path: str | Path) -> set[str]:
    """Sample keys of a tar shard (the WebDataset grouping rule)."""
    from pipeline.loading import loader as L

    with tarfile.open(path) as tf:
        return {L.split_member(m.name)[0] for m in tf.getmembers()} - {None}
