"""Optional FFCV ``.beton`` store for the static-image stage (MSRA10K + VOC image samples).

FFCV has no clip or video field, so this path fits the static-image stage only (the SSB
pre-training on MSRA10K + VOC); clip shard sets are refused. The WebDataset shards stay the
source of truth: :func:`write_beton` (this module) converts finished image-sample shard sets into
one ``.beton`` file plus a sidecar ``<out>.keys.json`` (:mod:`pipeline.loading.ffcv.format`), and
:func:`make_ffcv_loader` (:mod:`pipeline.loading.ffcv.loader`, re-exported here with
:func:`iter_beton`) reads it.

Fields of the ``.beton`` (all standard FFCV field types, so a plain ``ffcv.Reader`` opens it):

``image``  ``RGBImageField``. ``image_mode="raw"`` (default) stores the decoded RGB pixels
           (decoded by the WebDataset loader's own decoder, :func:`decode_image`: torchvision's
           libjpeg-turbo decoder, PIL as fallback), so the image comes back bit-exact.
           ``image_mode="jpg"`` re-encodes with OpenCV at ``jpeg_quality`` (several times
           smaller, lossy: mean abs difference around 1 at quality 95). FFCV's stock decoders
           handle variable sizes only with a crop; the loader has its own decoder.
``mask``   ``BytesField`` holding an 8-byte header (``uint32`` height, ``uint32`` width, little
           endian) and then ``height * width`` ``uint8`` labels, row-major. The labels are the
           mask after the dataset's ``mask_format`` rule (:func:`decode_mask`, the loader's
           rule): ``binary`` masks become {0, 1}; ``voc`` / ``palette`` masks keep their ids and
           the 255 void. Why not the alternatives: a second ``RGBImageField`` (raw) would store
           the mask three times and its stock decoders resize with area interpolation, which
           mixes ids; a fixed-shape ``NDArrayField`` costs the largest mask's size for every
           sample and still needs the true size stored elsewhere; a ``BytesField`` holding the
           PNG round-trips too but needs PIL, i.e. Python, for every sample at load time. Raw
           labels are copied (or nearest-resized) by JIT-compiled code and come back
           pixel-equal.
``index``  ``IntField``: the sample's position in the sidecar's ``samples`` list (``key``,
           ``dataset``, ``split``, ``shard``, ``mask_format``, ``height``, ``width``,
           ``objects``, ``ok``), so every FFCV sample can be matched to its WebDataset sample.

Shards are listed like the loader lists them (:func:`finished_shards`) and indexed with the
loader's tar parser and key rule (:mod:`pipeline.lake.tario`, :func:`split_member`): member
offsets first, member bytes read later by the writer's workers.

Writing is atomic: the ``.beton`` is written under a temporary name and renamed once it and its
sidecar are complete; the sidecar records the file size and sample count, and the loader refuses
a pair that does not match. A re-run over unchanged shards is skipped (inputs digest).
Samples that fail to decode are skipped with a warning naming shard and key (``on_error``).

FFCV 1.0.2 quirk handled here: its writer's progress loop waits forever if a worker raises
(decoding errors are caught inside the dataset and turned into placeholders that the sidecar
marks ``ok: false``; pages are sized so a sample always fits). The loader's workarounds are in
:mod:`pipeline.loading.ffcv.loader`.

FFCV is optional: ``pip install -e .[ffcv]`` after
``apt-get install -y pkg-config libopencv-dev libturbojpeg0-dev``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.core.atomic import atomic_write_text, remove_stale_temps, temp_path
from pipeline.lake.listing import finished_shards
from pipeline.loading.decode import decode_mask
from pipeline.loading.ffcv.format import (encode_mask_record, load_sidecar, MASK_HEADER_BYTES,
                                          MASK_PAD_VALUE, require_ffcv, sidecar_path, STORE_FORMAT,
                                          STORE_VERSION, StoreError)
from pipeline.loading.ffcv.index import (_fit_resolution, _index_tar, _inputs_digest, _read_member,
                                         _Sample, _shard_label, decode_image, IMAGE_MODES,
                                         NoFinishedShards, resize_mask_nearest)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Writing


class _ShardSamples:
    """Indexable dataset for ``DatasetWriter.from_indexed_dataset`` (picklable: plain fields).

    A sample that fails to decode becomes a 1x1 placeholder (so that FFCV's writer, whose
    progress loop waits for every sample, never hangs on a worker exception) and its error is
    written to ``error_dir``; the sidecar marks it ``ok: false`` and the loaders leave it out.
    """

    def __init__(self, samples: list[_Sample], error_dir: str, max_resolution: int | None):
        self.samples = samples
        self.error_dir = error_dir
        self.max_resolution = max_resolution
        self._files: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def _file(self, path: str):
        f = self._files.get(path)
        if f is None:
            if len(self._files) > 8:
                for g in self._files.values():
                    g.close()
                self._files.clear()
            f = self._files[path] = open(path, "rb")
        return f

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[i]
        f = self._file(s.tar)
        image = decode_image(_read_member(f, s.jpg))
        labels = decode_mask(_read_member(f, s.png), s.meta["mask_format"])
        if image.shape[:2] != labels.shape:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but mask is "
                             f"{labels.shape[1]}x{labels.shape[0]}")
        h, w = _fit_resolution(image.shape[0], image.shape[1], self.max_resolution)
        if (h, w) != labels.shape:
            import cv2

            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            labels = resize_mask_nearest(labels, (h, w))
        return np.ascontiguousarray(image), labels

    def __getitem__(self, i: int):
        try:
            image, labels = self.load(i)
        except Exception as e:  # noqa: BLE001 - recorded and reported by write_beton
            s = self.samples[i]
            Path(self.error_dir, f"{i}.json").write_text(json.dumps(
                {"shard": s.shard, "key": s.key, "error": f"{type(e).__name__}: {e}"}))
            image = np.zeros((1, 1, 3), np.uint8)
            labels = np.full((1, 1), MASK_PAD_VALUE, np.uint8)
        return image, encode_mask_record(labels), i


@contextlib.contextmanager
def _quiet_writer(progress: bool):
    """FFCV's writer always shows a tqdm bar; silence it unless asked for."""
    if progress:
        yield
        return
    import functools

    import ffcv.writer as fw

    original = fw.tqdm
    fw.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        fw.tqdm = original


def write_beton(shard_dirs: Sequence[str | Path], out_path: str | Path, *, num_workers: int = 1,
                max_resolution: int | None = None, image_mode: str = "raw",
                jpeg_quality: int = 95, on_error: str = "skip", overwrite: bool = False,
                progress: bool = False) -> dict:
    """Convert finished image-sample shard sets (``<lake>/<dataset>/<split>/``) to one .beton.

    ``image_mode``: ``"raw"`` stores RGB pixels (exact); ``"jpg"`` re-encodes at
    ``jpeg_quality`` (smaller, lossy). ``max_resolution`` shrinks samples whose longer side
    exceeds it (image: area interpolation; mask: nearest). ``on_error="skip"`` leaves out
    samples that fail to decode (with a warning naming shard and key); ``"raise"`` stops.
    Returns a summary dict (``samples``, ``failures``, ``bytes``, ``seconds``, ...).
    """
    t0 = time.time()
    require_ffcv()
    if image_mode not in IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if isinstance(shard_dirs, (str, Path)):
        shard_dirs = [shard_dirs]
    if not shard_dirs:
        raise ValueError("write_beton needs at least one shard directory")
    out_path = Path(out_path)

    tars: list[Path] = []
    for d in map(Path, shard_dirs):
        if not d.is_dir():
            raise NoFinishedShards(f"{d}: shard directory does not exist (expected "
                                   f"<lake>/<dataset>/<split>/ with NNNNN.tar files)")
        found = finished_shards(d)
        if not found:
            nested = sorted({p.parent for p in d.glob("*/**/*_stats.json")})
            hint = (f"; it has shard sets below it, pass those instead: "
                    f"{', '.join(str(p) for p in nested[:4])}" if nested else
                    "; run the preprocessing job (launch/preprocess.py) for it first, or wait "
                    "for it to finish (a NNNNN.tar without NNNNN_stats.json is unfinished)")
            raise NoFinishedShards(f"{d}: no finished shards{hint}")
        tars.extend(found)

    settings = {"image_mode": image_mode, "max_resolution": max_resolution,
                "jpeg_quality": jpeg_quality if image_mode == "jpg" else None,
                "version": STORE_VERSION}
    digest = _inputs_digest(tars, settings)
    if not overwrite and out_path.is_file():
        with contextlib.suppress(StoreError, ValueError, OSError):
            doc = load_sidecar(out_path)
            if doc.get("inputs_digest") == digest:
                return {**doc["summary"], "path": str(out_path),
                        "keys_path": str(sidecar_path(out_path)), "skipped": True,
                        "seconds": round(time.time() - t0, 3)}

    samples: list[_Sample] = []
    problems: list[dict] = []
    for tar in tars:
        s, p = _index_tar(tar)
        samples.extend(s)
        problems.extend(p)
    if problems and on_error == "raise":
        raise StoreError("; ".join(f"{p['shard']} {p['key']}: {p['error']}" for p in problems))
    if not samples:
        raise StoreError(f"no image samples in {len(tars)} finished shard(s) of "
                         f"{', '.join(map(str, shard_dirs))}")

    from ffcv.fields import BytesField, IntField, RGBImageField
    from ffcv.writer import MIN_PAGE_SIZE, DatasetWriter

    # Every field of one sample must fit into one page (FFCV retries once on a fresh page and
    # then fails inside a worker, which its writer would wait for forever).
    biggest = max(int(s.meta.get("height", 0)) * int(s.meta.get("width", 0)) for s in samples)
    need = 2 * (biggest * 4 + MASK_HEADER_BYTES) + (1 << 16)
    page_size = max(4 * MIN_PAGE_SIZE, 1 << math.ceil(math.log2(need)))

    fields = {
        "image": RGBImageField(write_mode=image_mode, jpeg_quality=jpeg_quality),
        "mask": BytesField(),
        "index": IntField(),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_path.parent, out_path.name)  # left by a killed run
    for stale in out_path.parent.glob(f".{out_path.name}.*.errors"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temp_path(out_path)
    error_dir = out_path.with_name(f".{out_path.name}.{os.getpid()}.errors")
    shutil.rmtree(error_dir, ignore_errors=True)
    error_dir.mkdir()
    dataset = _ShardSamples(samples, str(error_dir), max_resolution)
    try:
        writer = DatasetWriter(str(tmp), fields, page_size=page_size,
                               num_workers=max(1, int(num_workers)))
        with _quiet_writer(progress):
            writer.from_indexed_dataset(dataset, chunksize=64)
        failed = sorted((json.loads(p.read_text()) | {"index": int(p.stem)}
                         for p in error_dir.glob("*.json")), key=lambda d: d["index"])
        if failed and on_error == "raise":
            raise StoreError("; ".join(f"{d['shard']} {d['key']}: {d['error']}" for d in failed))
        for d in problems + failed:
            log.warning("ffcv_store: skipped %s %s: %s", d["shard"], d["key"], d["error"])
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())

        from ffcv.reader import Reader

        meta = Reader(str(tmp)).metadata
        heights = meta["f0"]["height"].astype(int)
        widths = meta["f0"]["width"].astype(int)
        bad = {d["index"] for d in failed}
        records = []
        for i, s in enumerate(samples):
            m = s.meta
            records.append({
                "key": s.key, "dataset": m.get("dataset"), "split": m.get("split"),
                "shard": s.shard, "mask_format": m["mask_format"],
                "height": int(heights[i]), "width": int(widths[i]),
                "source_height": m.get("height"), "source_width": m.get("width"),
                "objects": m.get("objects"), "ok": i not in bad,
            })
        datasets: dict[str, int] = {}
        for r in records:
            if r["ok"]:
                name = f"{r['dataset']}/{r['split']}"
                datasets[name] = datasets.get(name, 0) + 1
        summary = {
            "samples": len(samples) - len(bad), "failures": len(problems) + len(failed),
            "failed": problems + failed, "shards": len(tars), "datasets": datasets,
            "bytes": tmp.stat().st_size, "image_mode": image_mode,
            "max_resolution": max_resolution, "page_size": page_size,
        }
        doc = {
            "format": STORE_FORMAT, "version": STORE_VERSION, "beton": out_path.name,
            "beton_bytes": tmp.stat().st_size, "num_samples": len(samples),
            "fields": {
                "image": f"RGBImageField({image_mode})",
                "mask": "BytesField: <u4 height, <u4 width, then height*width uint8 labels",
                "index": "IntField: position in samples",
            },
            "settings": settings, "inputs_digest": digest,
            "shards": [_shard_label(t) for t in tars], "summary": summary, "samples": records,
        }
        summary["seconds"] = round(time.time() - t0, 3)
        atomic_write_text(sidecar_path(out_path), json.dumps(doc, indent=1))
        os.replace(tmp, out_path)
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.info("ffcv_store: wrote %s (%d samples, %d failures, %.1f s)", out_path,
             summary["samples"], summary["failures"], summary["seconds"])
    return {**summary, "path": str(out_path), "keys_path": str(sidecar_path(out_path)),
            "skipped": False}


__all__ = ["IMAGE_MODES", "NoFinishedShards", "decode_image", "resize_mask_nearest", "write_beton"]
