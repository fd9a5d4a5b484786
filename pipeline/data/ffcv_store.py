"""Optional FFCV ``.beton`` store for the static-image stage (MSRA10K + VOC image samples).

FFCV has no clip or video field, so this path fits the static-image stage only (the SSB
pre-training on MSRA10K + VOC); clip shard sets are refused. The WebDataset shards stay the
source of truth: :func:`write_beton` converts finished image-sample shard sets into one
``.beton`` file plus a sidecar ``<out>.keys.json``, and :func:`make_ffcv_loader` reads it.

Fields of the ``.beton`` (all standard FFCV field types, so a plain ``ffcv.Reader`` opens it):

``image``  ``RGBImageField``. ``image_mode="raw"`` (default) stores the decoded RGB pixels
           (decoded the way the WebDataset loader decodes: torchvision's libjpeg-turbo decoder,
           PIL as fallback), so the image comes back bit-exact. ``image_mode="jpg"`` re-encodes
           with OpenCV at ``jpeg_quality`` (several times smaller, lossy: mean abs difference
           around 1 at quality 95). FFCV's stock decoders handle variable sizes only with a
           crop; this module has its own decoder (below).
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

Loading (:func:`make_ffcv_loader`): custom JIT decoders (:func:`_ops`). With ``size=(H, W)``
the image is resized by FFCV's ``resize_crop`` (OpenCV, area interpolation, whole frame) and the
mask by nearest neighbour with half-pixel centres, index for index the same as PyTorch's
``mode="nearest-exact"`` / torchvision ``NEAREST_EXACT`` (what the WebDataset path's
augmentation uses for masks), so ids are never mixed. With ``size=None`` samples are padded to
the largest size in the file (image 0, mask 255 = void); :func:`iter_beton` crops them back.
Random augmentation must apply one draw to both image and mask, which FFCV's per-field
pipelines cannot share, so it runs after loading as a torch step: ``augment=`` reuses
:func:`pipeline.data.augment.augment_image` (the WebDataset path's own code), ``transform=``
takes any batch-level callable.

Writing is atomic: the ``.beton`` is written under a temporary name and renamed once it and its
sidecar are complete; the sidecar records the file size and sample count, and the loader refuses
a pair that does not match. A re-run over unchanged shards is skipped (inputs digest).
Samples that fail to decode are skipped with a warning naming shard and key (``on_error``).

FFCV 1.0.2 quirks handled here: its writer's progress loop waits forever if a worker raises
(decoding errors are caught inside the dataset and turned into placeholders that the sidecar
marks ``ok: false``; pages are sized so a sample always fits), its loader thread can die
silently and leave the consumer waiting (:func:`_next_batch` raises instead), and its OS-cache
reader corrupts numba's type registry (:func:`_fix_os_cache_reader`).

FFCV is optional: ``pip install -e .[ffcv]`` after
``apt-get install -y pkg-config libopencv-dev libturbojpeg0-dev``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tarfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..atomic import TMP_SUFFIX, atomic_write_text, remove_stale_temps

log = logging.getLogger(__name__)

INSTALL_HINT = ("install it with `pip install -e .[ffcv]` after "
                "`apt-get install -y pkg-config libopencv-dev libturbojpeg0-dev`")
SIDECAR_SUFFIX = ".keys.json"
STORE_FORMAT = "stcnn-ffcv-store"
STORE_VERSION = 1
MASK_HEADER_BYTES = 8
MASK_PAD_VALUE = 255  # padding (size=None) is void, like VOC's boundary label
IMAGE_MODES = ("raw", "jpg")
MASK_FORMATS = ("binary", "palette", "voc")
FIELD_NAMES = ("image", "mask", "index")


class FFCVUnavailable(ImportError):
    """FFCV (or one of its native dependencies) cannot be imported."""


class NoFinishedShards(FileNotFoundError):
    """A shard directory holds no finished shard (``NNNNN.tar`` with its ``NNNNN_stats.json``)."""


class StoreError(ValueError):
    """A shard set cannot go into the store, or a ``.beton`` and its sidecar do not match."""


def require_ffcv():
    """Import ffcv or raise :class:`FFCVUnavailable` saying how to install it."""
    try:
        import ffcv  # noqa: F401
        import ffcv.fields  # noqa: F401
        import ffcv.loader  # noqa: F401
        import ffcv.writer  # noqa: F401
    except Exception as e:  # ImportError, or a native library that fails to load (OSError)
        raise FFCVUnavailable(f"the FFCV store needs the ffcv package, which failed to import "
                              f"({type(e).__name__}: {e}); {INSTALL_HINT}") from e
    return ffcv


# ------------------------------------------------------------------------------------------------
# Decoding shard members (the same rules as the WebDataset loader)


def decode_image(data: bytes) -> np.ndarray:
    """Source JPEG bytes -> (H, W, 3) uint8 RGB, decoded like the WebDataset loader does:
    torchvision's libjpeg-turbo decoder in RGB mode, PIL when it refuses the file; no EXIF
    rotation. (Both decoders gave identical pixels on every file tried here.)"""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - torchvision without image decoding
        decode_jpeg = None
    if decode_jpeg is not None and data:
        try:
            with warnings.catch_warnings():  # its per-call deprecation notice (torchcodec)
                warnings.simplefilter("ignore", DeprecationWarning)
                t = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                mode=ImageReadMode.RGB)
            return np.ascontiguousarray(t.permute(1, 2, 0).numpy())
        except RuntimeError:
            pass
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.format != "JPEG":
            raise ValueError(f"image member is {im.format}, not JPEG")
        return np.array(im.convert("RGB"), dtype=np.uint8)


def apply_mask_format(values: np.ndarray, mask_format: str) -> np.ndarray:
    """Mask values as stored -> labels: ``binary`` -> {0, 1} (foreground is value > 0);
    ``voc`` / ``palette`` -> ids unchanged (0 background, 1..N objects, 255 void)."""
    if values.ndim != 2 or values.dtype != np.uint8:
        raise ValueError(f"mask decoded to {values.dtype} {values.shape}, expected uint8 [H, W]")
    if mask_format == "binary":
        return (values > 0).astype(np.uint8)
    if mask_format in ("voc", "palette"):
        return np.ascontiguousarray(values)
    raise ValueError(f"unknown mask_format {mask_format!r}; expected one of {MASK_FORMATS}")


def decode_mask(data: bytes, mask_format: str) -> np.ndarray:
    """Source PNG bytes -> (H, W) uint8 labels. P and L images are read as stored indices
    (``np.array`` of the P-mode image: ids are kept, never turned into colours); mode 1 as 0/1;
    any other mode is refused, as by the WebDataset loader."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.format != "PNG":
            raise ValueError(f"mask member is {im.format}, not PNG")
        if im.mode in ("P", "L"):
            values = np.array(im)
        elif im.mode == "1":
            values = np.array(im).astype(np.uint8)
        else:
            raise ValueError(f"mask PNG mode {im.mode} is not an index mask (P, L or 1)")
    return apply_mask_format(values, mask_format)


def merge_object_ids(labels: np.ndarray) -> np.ndarray:
    """Every object id 1..254 -> 1, 0 and 255 (void) kept (the loader's ``merge_objects``)."""
    return np.where((labels > 0) & (labels != 255), np.uint8(1), labels).astype(np.uint8)


def encode_mask_record(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 labels -> the bytes stored in the ``mask`` field (header + pixels)."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    h, w = labels.shape
    header = np.array([h, w], dtype="<u4").view(np.uint8)
    return np.concatenate([header, labels.reshape(-1)])


def decode_mask_record(record: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_mask_record` (plain numpy; the loader uses JIT code)."""
    record = np.asarray(record, dtype=np.uint8)
    h, w = (int(v) for v in record[:MASK_HEADER_BYTES].view("<u4"))
    return record[MASK_HEADER_BYTES:MASK_HEADER_BYTES + h * w].reshape(h, w).copy()


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output index for a nearest-neighbour resize with half-pixel
    centres: PyTorch's ``mode="nearest-exact"`` (torchvision ``NEAREST_EXACT``, what the
    WebDataset path's augmentation uses for masks), computed in float32 as PyTorch does."""
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(pos).astype(np.int64), in_size - 1)


def resize_mask_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) labels -> (H, W) by nearest neighbour (same result as the loader's JIT code)."""
    H, W = size
    return labels[nearest_indices(labels.shape[0], H)[:, None],
                  nearest_indices(labels.shape[1], W)[None, :]]


def _fit_resolution(h: int, w: int, max_resolution: int | None) -> tuple[int, int]:
    """FFCV's ``max_resolution`` rule: shrink so that the longer side is at most the limit."""
    if not max_resolution or max(h, w) <= max_resolution:
        return h, w
    ratio = max_resolution / max(h, w)
    return max(1, int(ratio * h)), max(1, int(ratio * w))


# ------------------------------------------------------------------------------------------------
# Finding and indexing shards (plain tarfile: only jpg / png / json members are read, by offset)


def finished_shards(shard_dir: Path) -> list[Path]:
    """``NNNNN.tar`` files of ``shard_dir`` whose ``NNNNN_stats.json`` exists, sorted."""
    out = []
    for tar in sorted(Path(shard_dir).glob("*.tar")):
        if tar.name.startswith("."):
            continue  # a temp file of a running or killed writer
        if tar.with_name(f"{tar.stem}_stats.json").is_file():
            out.append(tar)
    return out


@dataclasses.dataclass(frozen=True)
class _Member:
    offset: int
    size: int


@dataclasses.dataclass(frozen=True)
class _Sample:
    tar: str  # path of the tar (local, not written to the sidecar)
    shard: str  # "<dataset>/<split>/NNNNN.tar", for messages and the sidecar
    key: str
    jpg: _Member | None
    png: _Member | None
    meta: dict


def _read_member(f, m: _Member) -> bytes:
    f.seek(m.offset)
    data = f.read(m.size)
    if len(data) != m.size:
        raise OSError(f"truncated member ({len(data)} of {m.size} bytes)")
    return data


def _shard_label(tar: Path) -> str:
    return "/".join(tar.parts[-3:])


def _index_tar(tar: Path) -> tuple[list[_Sample], list[dict]]:
    """List the image samples of one shard; returns (samples, problems)."""
    groups: dict[str, dict[str, _Member]] = {}
    order: list[str] = []
    label = _shard_label(tar)
    with tarfile.open(tar, "r:") as tf:
        for ti in tf:
            if not ti.isfile():
                continue
            folder, _, base = ti.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if not dot:
                continue
            key = f"{folder}/{stem}" if folder else stem
            if key not in groups:
                groups[key] = {}
                order.append(key)
            groups[key][ext] = _Member(ti.offset_data, ti.size)
    samples, problems = [], []
    with open(tar, "rb") as f:
        for key in order:
            members = groups[key]
            if any(ext[:2].isdigit() for ext in members):  # 00.jpg .. NN.jpg
                raise StoreError(f"{label}: sample {key!r} is a clip sample (frames 00.jpg..); the "
                                 f"FFCV store holds the static-image stage only (MSRA10K, VOC): "
                                 f"pass image-sample shard sets")
            meta: dict = {}
            if "json" in members:
                try:
                    meta = json.loads(_read_member(f, members["json"]))
                except (OSError, ValueError) as e:
                    problems.append({"shard": label, "key": key, "error": f"bad json: {e}"})
                    continue
            if meta.get("frame_ids"):
                raise StoreError(f"{label}: sample {key!r} is a clip sample (json has frame_ids); "
                                 f"the FFCV store holds the static-image stage only")
            missing = [m for m in ("jpg", "mask.png", "json") if m not in members]
            if missing:
                problems.append({"shard": label, "key": key,
                                 "error": f"missing member(s) {', '.join(missing)}"})
                continue
            if meta.get("mask_format") not in MASK_FORMATS:
                problems.append({"shard": label, "key": key,
                                 "error": f"json mask_format {meta.get('mask_format')!r} is not "
                                          f"one of {MASK_FORMATS}"})
                continue
            samples.append(_Sample(str(tar), label, key, members["jpg"], members["mask.png"], meta))
    return samples, problems


def _inputs_digest(tars: list[Path], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for tar in tars:
        stats = tar.with_name(f"{tar.stem}_stats.json")
        h.update(_shard_label(tar).encode())
        h.update(str(tar.stat().st_size).encode())
        h.update(stats.read_bytes())
    return h.hexdigest()


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


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def sidecar_path(beton_path: str | Path) -> Path:
    p = Path(beton_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def load_sidecar(beton_path: str | Path) -> dict:
    """The sidecar of a ``.beton``; checks that the two belong together."""
    beton_path = Path(beton_path)
    side = sidecar_path(beton_path)
    if not beton_path.is_file():
        raise FileNotFoundError(f"{beton_path}: no such .beton; build it with write_beton()")
    if not side.is_file():
        raise StoreError(f"{beton_path}: its sidecar {side.name} is missing; re-run write_beton()")
    doc = json.loads(side.read_text())
    if doc.get("format") != STORE_FORMAT or doc.get("version") != STORE_VERSION:
        raise StoreError(f"{side}: not a {STORE_FORMAT} v{STORE_VERSION} sidecar")
    size = beton_path.stat().st_size
    if doc.get("beton_bytes") != size or len(doc.get("samples", ())) != doc.get("num_samples"):
        raise StoreError(f"{beton_path} ({size} bytes) does not match its sidecar "
                         f"({doc.get('beton_bytes')} bytes): a write was interrupted; "
                         f"re-run write_beton()")
    return doc


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
    with contextlib.suppress(ImportError):  # import the JPEG decoder once, before the fork,
        import torchvision.io  # noqa: F401  (not ~2 s in every writer process)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_path.parent, out_path.name)  # left by a killed run
    for stale in out_path.parent.glob(f".{out_path.name}.*.errors"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = _tmp_path(out_path)
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
            warnings.warn(f"ffcv_store: skipped {d['shard']} {d['key']}: {d['error']}",
                          stacklevel=2)
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


# ------------------------------------------------------------------------------------------------
# Loading: custom JIT decoders


_OPS: dict | None = None


def _fix_os_cache_reader() -> None:
    """Work around an FFCV 1.0.2 bug that corrupts numba's type registry.

    ``OSCacheManager.compile_reader`` (run by every ``Loader(os_cache=True)``) builds its
    signature from ``state_type``, which takes the *interned* numba type ``nb.uint8[::1]`` and
    sets ``mutable = False`` on it in place. That changes the hash of a type object that live
    dispatchers use in their overload keys, so any function already compiled for a writable
    1-D uint8 array breaks: numba raises ``KeyError`` when it next lists that function's
    signatures (seen here: a second loader reusing a helper failed to compile inside FFCV's
    pipeline thread, and the consumer then waited forever) or in its finalizer ("Exception
    ignored" warnings at garbage collection). The replacement compiles the same reader (look up
    the allocation's size, return that slice of the read-only memory map) with a read-only
    type built fresh, so no shared type object is modified.
    """
    from ffcv.memory_managers.os_cache import OSCacheManager
    from ffcv.pipeline.compiler import Compiler

    if getattr(OSCacheManager, "_stcnn_reader_fixed", False):
        return
    import numba as nb

    def compile_reader(self):
        data = nb.types.Array(nb.uint8, 1, "C", readonly=True)  # np.memmap(mode="r")
        table = nb.types.Array(nb.uint64, 1, "C")  # sorted allocation pointers, their sizes

        def read(address, mem_state):
            mmap, ptrs, sizes = mem_state
            n = sizes[np.searchsorted(ptrs, address)]
            return mmap[address:address + n]

        return Compiler.compile(read, data(nb.uint64, nb.types.Tuple([data, table, table])))

    OSCacheManager.compile_reader = compile_reader
    OSCacheManager._stcnn_reader_fixed = True


def _ops() -> dict:
    """FFCV operations, defined on first use so that this module imports without ffcv."""
    global _OPS
    if _OPS is not None:
        return _OPS
    require_ffcv()
    from dataclasses import replace

    import numba as nb
    from ffcv.libffcv import imdecode, resize_crop
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler
    from ffcv.pipeline.operation import Operation

    _fix_os_cache_reader()
    u1 = np.dtype("<u1")

    # Compiled once, without fastmath (FFCV compiles pipeline code with fastmath=True, which may
    # turn the division into a reciprocal multiply): the same float32 steps as PyTorch's
    # "nearest-exact" index, so the JIT resize equals F.interpolate / torchvision NEAREST_EXACT.
    @nb.njit(nogil=True, fastmath=False, cache=False)
    def nearest_src(i, in_size, out_size):
        scale = np.float32(in_size) / np.float32(out_size)
        pos = (np.float32(i) + np.float32(0.5)) * scale
        return min(np.int64(np.floor(pos)), in_size - 1)

    class ImageDecoder(Operation):
        """``RGBImageField`` (raw or jpg, any size) -> (H, W, 3) uint8: resized to ``size`` with
        FFCV's ``resize_crop`` (OpenCV, area; whole frame, no crop), or zero-padded to the
        largest size in the file."""

        def __init__(self, size: tuple[int, int] | None):
            super().__init__()
            self.size = size

        def declare_state_and_memory(self, previous_state):
            max_h = int(self.metadata["height"].max())
            max_w = int(self.metadata["width"].max())
            out = (int(self.size[0]), int(self.size[1]), 3) if self.size else (max_h, max_w, 3)
            return (replace(previous_state, jit_mode=True, shape=out, dtype=u1),
                    (AllocationQuery(out, u1), AllocationQuery((max_h * max_w * 3,), u1)))

        def generate_code(self) -> Callable:
            mem_read = self.memory_read
            imdecode_c = Compiler.compile(imdecode)
            resize_c = Compiler.compile(resize_crop)
            my_range = Compiler.get_iterator()
            do_resize = self.size is not None

            def decode(batch_indices, storage, metadata, storage_state):
                destination, temp = storage
                for i in my_range(len(batch_indices)):
                    field = metadata[batch_indices[i]]
                    data = mem_read(field["data_ptr"], storage_state)
                    h = np.int64(field["height"])
                    w = np.int64(field["width"])
                    if field["mode"] == 0:  # jpg
                        buf = temp[i]
                        imdecode_c(data, buf, h, w, h, w, 0, 0, 1, 1, False, False)
                        src = buf[:h * w * 3].reshape(h, w, 3)
                    else:  # raw pixels
                        src = data[:h * w * 3].reshape(h, w, 3)
                    dst = destination[i]
                    if do_resize:
                        resize_c(src, 0, h, 0, w, dst)
                    else:
                        dst[:, :, :] = 0
                        dst[:h, :w, :] = src
                return destination[:len(batch_indices)]

            decode.is_parallel = True
            return decode

    class MaskDecoder(Operation):
        """``BytesField`` mask record -> (H, W) uint8 labels: resized to ``size`` by nearest
        neighbour (half-pixel centres, PyTorch's "nearest-exact"), or padded with 255 (void) to
        the largest size. ``merge_objects`` turns ids 1..254 into 1 (0 and 255 kept)."""

        def __init__(self, size: tuple[int, int] | None, max_hw: tuple[int, int],
                     merge_objects: bool = False):
            super().__init__()
            self.size = size
            self.max_hw = max_hw  # the mask sizes live in the data, not in the field metadata
            self.merge_objects = merge_objects

        def declare_state_and_memory(self, previous_state):
            out = tuple(int(v) for v in (self.size or self.max_hw))
            return (replace(previous_state, jit_mode=True, shape=out, dtype=u1),
                    AllocationQuery(out, u1))

        def generate_code(self) -> Callable:
            mem_read = self.memory_read
            my_range = Compiler.get_iterator()
            do_resize = self.size is not None
            merge = bool(self.merge_objects)
            pad = np.uint8(MASK_PAD_VALUE)
            one = np.uint8(1)
            void = np.uint8(255)

            def decode(batch_indices, destination, metadata, storage_state):
                out_h = destination.shape[1]
                out_w = destination.shape[2]
                for i in my_range(len(batch_indices)):
                    data = mem_read(metadata[batch_indices[i]]["ptr"], storage_state)
                    h = (np.int64(data[0]) | (np.int64(data[1]) << 8) | (np.int64(data[2]) << 16)
                         | (np.int64(data[3]) << 24))
                    w = (np.int64(data[4]) | (np.int64(data[5]) << 8) | (np.int64(data[6]) << 16)
                         | (np.int64(data[7]) << 24))
                    dst = destination[i]
                    if do_resize:
                        cols = np.empty(out_w, np.int64)
                        for x in range(out_w):
                            cols[x] = nearest_src(x, w, out_w)
                        for y in range(out_h):
                            row = 8 + nearest_src(y, h, out_h) * w
                            for x in range(out_w):
                                dst[y, x] = data[row + cols[x]]
                    else:
                        dst[:, :] = pad
                        for y in range(h):
                            dst[y, :w] = data[8 + y * w:8 + (y + 1) * w]
                    if merge:
                        for y in range(out_h):
                            for x in range(out_w):
                                v = dst[y, x]
                                if v != 0 and v != void:
                                    dst[y, x] = one
                return destination[:len(batch_indices)]

            decode.is_parallel = True
            return decode

    class Flatten(Operation):
        """(B, 1) -> (B,) torch view (for the ``index`` field)."""

        def generate_code(self) -> Callable:
            def flatten(inp, dst):
                return inp.reshape(-1)

            return flatten

        def declare_state_and_memory(self, previous_state):
            return replace(previous_state, jit_mode=False, shape=()), None

    _OPS = {"ImageDecoder": ImageDecoder, "MaskDecoder": MaskDecoder, "Flatten": Flatten}
    return _OPS


class LoaderThreadDied(RuntimeError):
    """FFCV's batch-producing thread stopped before the end of the epoch."""


def _next_batch(it):
    """``next(it)`` on an FFCV ``EpochIterator``, but raising instead of waiting forever when its
    thread has died (FFCV's own ``__next__`` blocks on the queue: an exception in the pipeline,
    e.g. a compile error, would hang the training loop). Returns None at the end of the epoch."""
    q = it.output_queue
    while q.empty():
        alive = it.is_alive()
        if q.empty() and not alive:
            raise LoaderThreadDied("FFCV's loading thread stopped without finishing the epoch "
                                   "(its exception is printed above, as 'Exception in thread')")
        time.sleep(0.0005)
    try:
        return next(it)
    except StopIteration:
        return None


def _seed_int(*parts) -> int:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class FFCVImageLoader:
    """What :func:`make_ffcv_loader` returns: iterates ``(image, mask, index)`` batches.

    ``loader`` is the underlying ``ffcv.loader.Loader``; ``samples`` the sidecar records
    (``samples[i]`` for ``i`` in ``index``). Without ``augment``/``transform`` the tensors are
    views of FFCV's ring buffers: ``clone()`` what must outlive the next few batches.
    """

    def __init__(self, loader, samples: list[dict], *, augment=None, transform=None,
                 seed: int = 0, rank: int = 0):
        self.loader = loader
        self.samples = samples
        self.augment = augment
        self.transform = transform
        self.seed = seed
        self.rank = rank
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    def _augment(self, image, mask, index, gen):
        import torch

        from .augment import augment_image

        images, masks = [], []
        for b, i in enumerate(index.tolist()):
            h, w = self.samples[i]["height"], self.samples[i]["width"]
            img, m, _ = augment_image(image[b, :, :h, :w], mask[b, :h, :w], self.augment, gen)
            images.append(img)
            masks.append(m)
        return torch.stack(images), torch.stack(masks)

    def __iter__(self):
        gen = None
        if self.augment is not None:
            import torch

            gen = torch.Generator().manual_seed(_seed_int("ffcv", self.seed, self.epoch,
                                                          self.rank))
        self.epoch += 1
        it = iter(self.loader)
        try:
            while True:
                batch = _next_batch(it)
                if batch is None:
                    return
                image, mask, index = batch
                if self.augment is not None:
                    image, mask = self._augment(image, mask, index, gen)
                if self.transform is not None:
                    image, mask = self.transform(image, mask)
                yield image, mask, index
        finally:
            it.close()


def _usable_indices(doc: dict, datasets: Sequence[str] | None,
                    indices: Sequence[int] | None) -> np.ndarray:
    samples = doc["samples"]
    wanted = None
    if datasets is not None:
        wanted = set(datasets)
        known = {s["dataset"] for s in samples} | {f"{s['dataset']}/{s['split']}" for s in samples}
        unknown = wanted - known
        if unknown:
            raise ValueError(f"datasets {sorted(unknown)} are not in this store "
                             f"(it has {sorted(known)})")
    pool = range(len(samples)) if indices is None else (int(i) for i in indices)
    keep = []
    for i in pool:
        s = samples[i]
        if not s["ok"]:
            continue
        if wanted is not None and s["dataset"] not in wanted and \
                f"{s['dataset']}/{s['split']}" not in wanted:
            continue
        keep.append(i)
    if not keep:
        raise StoreError("no usable samples selected from the store")
    return np.array(keep, dtype=np.uint64)


def make_ffcv_loader(beton_path: str | Path, batch_size: int, *,
                     size: tuple[int, int] | None = (300, 300), num_workers: int | None = None,
                     order: str = "random", seed: int = 0, distributed: bool = False,
                     drop_last: bool | None = None, os_cache: bool = True,
                     batches_ahead: int = 3, datasets: Sequence[str] | None = None,
                     indices: Sequence[int] | None = None, merge_objects: bool = False,
                     channels_last: bool = True, augment=None,
                     transform: Callable | None = None) -> FFCVImageLoader:
    """A loader over a store: batches ``(image, mask, index)``, image uint8 ``[B, 3, H, W]``,
    mask uint8 ``[B, H, W]``, index int64 ``[B]`` (position in the sidecar's ``samples``, see
    :func:`load_sidecar`; also ``loader.samples``).

    Geometry, one of:
    * ``size=(H, W)``: resized inside FFCV's JIT pipeline (image: OpenCV area interpolation;
      mask: nearest neighbour, half-pixel centres: never mixes ids);
    * ``size=None``: stored size, padded to the largest sample (image 0, mask 255 = void);
    * ``augment`` (an :class:`pipeline.data.augment.AugmentConfig`, a preset name such as
      ``"ssb_pretrain"``, or a mapping; leave ``size=None``): FFCV decodes at stored size and
      the WebDataset path's own ``augment_image`` (flip, rotation, rescale, crop, resize; the
      same draw for image and mask) runs per sample in a torch step after loading, seeded by
      ``(seed, epoch, rank)``. FFCV's per-field pipelines cannot share one random draw between
      the image and the mask fields, hence the torch step.
    ``transform(image, mask) -> (image, mask)``: any further torch step on each batch.

    ``order``: ``"random"`` (reshuffled every epoch from ``seed``) or ``"sequential"``;
    ``drop_last`` defaults to True for random and False for sequential order.
    ``distributed=True``: samples split across ranks like ``DistributedSampler`` (padded so that
    every rank gets the same number of batches; needs an initialised process group).
    ``datasets``: keep some datasets only (``"msra10k"``, ``"voc2012/train"``); ``indices``: a
    subset of sidecar positions. ``merge_objects``: ids 1..254 -> 1 (the loader's option).
    ``channels_last=True`` (default, like the WebDataset loader): the image batch is a permuted
    view of the decoder's [B, H, W, 3] memory (shape [B, 3, H, W], channels-last strides);
    False makes it contiguous NCHW, at the price of a uint8 transposing copy that halved the
    throughput here. Use ``.reshape``/``.contiguous()`` where a contiguous tensor is needed.
    ``num_workers``: FFCV's JIT threads (default: CPU count, at most 8); note that FFCV also
    calls ``torch.set_num_threads(num_workers)``.
    """
    require_ffcv()
    from ffcv.fields.decoders import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline import PipelineSpec
    from ffcv.transforms import ToTensor, ToTorchImage

    ops = _ops()
    doc = load_sidecar(beton_path)
    if order not in ("random", "sequential"):
        raise ValueError(f"order must be 'random' or 'sequential', got {order!r}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ValueError(f"size must be positive, got {size}")
    cfg = None
    if augment is not None:
        from .augment import resolve_augment

        cfg = resolve_augment(augment)
        if size is not None:
            raise ValueError("pass size=None with augment=...: the augment config's size (or "
                             "crop) decides the output size")
        if cfg.size is None and cfg.crop is None and int(batch_size) > 1:
            raise ValueError("augment config has neither size nor crop: samples of different "
                             "sizes cannot be batched (set AugmentConfig.size, or batch_size=1)")
    rank = 0
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("make_ffcv_loader(distributed=True) needs an initialised "
                               "torch.distributed process group (torchrun + init_process_group)")
        rank = dist.get_rank()
    if drop_last is None:
        drop_last = order == "random"
    if num_workers is None:
        num_workers = max(1, min(8, os.cpu_count() or 1))

    keep = _usable_indices(doc, datasets, indices)
    max_hw = (max(s["height"] for s in doc["samples"]), max(s["width"] for s in doc["samples"]))
    pipelines = {
        "image": PipelineSpec("image", decoder=ops["ImageDecoder"](size),
                              transforms=[ToTensor(), ToTorchImage(channels_last=channels_last)]),
        "mask": PipelineSpec("mask", decoder=ops["MaskDecoder"](size, max_hw, merge_objects),
                             transforms=[ToTensor()]),
        "index": PipelineSpec("index", decoder=IntDecoder(),
                              transforms=[ToTensor(), ops["Flatten"]()]),
    }
    loader = Loader(str(beton_path), batch_size=int(batch_size), num_workers=int(num_workers),
                    os_cache=os_cache,
                    order=OrderOption.RANDOM if order == "random" else OrderOption.SEQUENTIAL,
                    distributed=distributed, seed=int(seed), indices=keep, pipelines=pipelines,
                    drop_last=drop_last, batches_ahead=int(batches_ahead))
    return FFCVImageLoader(loader, doc["samples"], augment=cfg, transform=transform,
                           seed=int(seed), rank=rank)


def iter_beton(beton_path: str | Path, *, batch_size: int = 16, num_workers: int = 1,
               merge_objects: bool = False) -> Iterator[dict]:
    """Every (usable) sample of a store in order, through the FFCV loader at stored size:
    ``{"index", "key", "dataset", "split", "shard", "mask_format", "image", "mask"}`` with
    ``image`` (H, W, 3) and ``mask`` (H, W) uint8 numpy arrays (copies)."""
    loader = make_ffcv_loader(beton_path, batch_size, size=None, num_workers=num_workers,
                              order="sequential", drop_last=False, merge_objects=merge_objects)
    samples = loader.samples
    for image, mask, index in loader:
        image = image.permute(0, 2, 3, 1).numpy()
        mask = mask.numpy()
        for b, i in enumerate(index.tolist()):
            s = samples[i]
            h, w = s["height"], s["width"]
            yield {"index": i, "key": s["key"], "dataset": s["dataset"], "split": s["split"],
                   "shard": s["shard"], "mask_format": s["mask_format"],
                   "image": image[b, :h, :w].copy(), "mask": mask[b, :h, :w].copy()}
