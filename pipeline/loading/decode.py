"""Decoding shard samples: member bytes -> pixels and mask labels, a raw sample -> tensors.

Only three member kinds are decoded, by this module's own code (nothing is unpickled):

* ``*.jpg``: :func:`decode_jpeg`, torchvision's libjpeg-turbo decoder in RGB mode, PIL when it
  refuses a file; no EXIF rotation. When the pixels go into a given buffer (a slot of a batch),
  :func:`decode_jpeg_into` first: simplejpeg (libjpeg-turbo's TurboJPEG API, same pixels) writes
  them straight there, with no decoder-owned frame to copy (torchvision's decoder has no output
  argument); anything it refuses takes the general path.
* ``mask.png``: :func:`decode_mask`, through the one mask reader (``mask_png.py``): P images as
  stored indices (palette ids are kept, never turned into colours), L as grey values, LA as its
  grey channel (the official DAVIS-2016 has such a file), mode 1 as 0/1. Then the
  ``mask_format`` rule (:func:`apply_mask_format`): ``binary`` (0/255 sources) -> {0, 1};
  ``palette`` / ``voc`` / null -> ids as stored (0 background, 1..N objects, 255 void).
  ``merge_objects`` turns every id 1..254 into 1 and keeps 255 (:func:`merge_object_ids`; SSB
  pretraining on one merged foreground, as the authors did).
* ``json``: ``json.loads``, must be an object.

The WebDataset loader (:func:`decode_sample`) and the FFCV store's writer both decode here, so
the two give the same pixels and labels.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any, Literal, Mapping

import numpy as np
import torch
from PIL import Image

try:  # deprecated in torchvision 0.29 (in favour of torchcodec) but still the fastest here
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as _turbo_decode_jpeg
except ImportError:  # pragma: no cover - a torchvision without image decoding: PIL only
    _turbo_decode_jpeg = None

from pipeline.core.mask_png import read_mask_values

try:  # decodes into a caller's buffer (torchvision cannot): a frame copy saved per frame
    import simplejpeg as _sj
except ImportError:  # pragma: no cover - a dependency; without it every frame is copied once
    _sj = None

try:  # cv2.flip writes a mirrored frame straight into the batch (torch.flip makes a copy first)
    import cv2 as _cv2
except ImportError:  # pragma: no cover - opencv-python-headless is a dependency
    _cv2 = None
from pipeline.loading.tarsamples import FRAME_RE

Kind = Literal["clip", "image"]
MASK_FORMATS = ("binary", "palette", "voc")


class CorruptSampleError(ValueError):
    """A member of the sample fails to decode, or the members disagree (e.g. in size)."""

    reason = "corrupt_samples"  # the ReadStats counter


class IncompleteSampleError(ValueError):
    """A member the sample needs is missing, or the sample is not of the wanted kind."""

    reason = "incomplete_samples"  # the ReadStats counter


# ----------------------------------------------------------------------------------------------
# members


def decode_jpeg(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [3, H, W] (RGB), a channels-last view of the decoder's [H, W, 3]
    memory. torchvision's libjpeg-turbo decoder (1.5-1.9x PIL's speed on DAVIS frames:
    benchmarks/micro_claims.py prints it); PIL is tried
    when it refuses a file (both gave identical pixels on every file tried); a failure of both
    raises :class:`CorruptSampleError`."""
    if not data:
        raise CorruptSampleError("empty JPEG member")
    first = "torchvision decoder unavailable"
    if _turbo_decode_jpeg is not None:
        try:
            with warnings.catch_warnings():  # its per-call deprecation notice
                warnings.simplefilter("ignore", DeprecationWarning)
                return _turbo_decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                          mode=ImageReadMode.RGB)
        except RuntimeError as exn:
            first = str(exn).splitlines()[0][-100:]
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise ValueError(f"{im.format}, not JPEG")
            arr = np.array(im.convert("RGB"))
    except Exception as exn:  # PIL raises many types; all mean "not a readable JPEG"
        raise CorruptSampleError(f"bad JPEG: {first}; PIL: {type(exn).__name__}: {exn}") from None
    return torch.from_numpy(arr).permute(2, 0, 1)


def decode_jpeg_into(data: bytes, dst: torch.Tensor, hflip: bool = False) -> bool:
    """Decode JPEG bytes straight into ``dst`` (contiguous uint8 [H, W, 3], the frame's size),
    mirrored in place with ``hflip``: simplejpeg (libjpeg-turbo's TurboJPEG API: the same pixels
    as :func:`decode_jpeg`, checked on real DAVIS frames by the tests). False, with ``dst`` not to
    be trusted, when that cannot be done (no simplejpeg, another size, a file it refuses in strict
    mode: truncated, CMYK, ...): the caller then takes :func:`decode_jpeg`."""
    if _sj is None or not dst.is_contiguous() or dst.dtype != torch.uint8 or dst.dim() != 3 \
            or dst.shape[-1] != 3:
        return False
    try:
        h, w = _sj.decode_jpeg_header(data)[:2]
        if (h, w) != tuple(dst.shape[:2]):
            return False
        out = dst.numpy()
        res = _sj.decode_jpeg(data, colorspace="RGB", buffer=out, strict=True)
    except ValueError:
        return False
    if res.ctypes.data != out.ctypes.data:  # pragma: no cover - not written in place
        return False
    if hflip:
        _copy_into(dst, dst, True)  # OpenCV mirrors in place
    return True


def _copy_into(src: torch.Tensor, dst: torch.Tensor, hflip: bool) -> None:
    """An HWC frame into ``dst`` (same shape), mirrored with ``hflip`` (OpenCV in one pass when
    it can, else a copy of ``torch.flip``)."""
    if not (hflip and _flip_into(src, dst)):
        dst.copy_(src.flip(1) if hflip else src)


def _flip_into(src: torch.Tensor, dst: torch.Tensor) -> bool:
    """Mirror an HWC uint8 frame left-right into ``dst`` in one pass (OpenCV); False when that
    cannot be done in place (then the caller copies a ``torch.flip``)."""
    if _cv2 is None or not (src.is_contiguous() and dst.is_contiguous()) \
            or src.shape != dst.shape or src.shape[-1] not in (1, 3, 4):
        return False
    out = dst.numpy()
    res = _cv2.flip(src.numpy(), 1, dst=out)
    return res is not None and res.ctypes.data == out.ctypes.data


def merge_object_ids(labels: np.ndarray) -> np.ndarray:
    """Every object id 1..254 -> 1, 0 and 255 (void) kept (``merge_objects``)."""
    return np.where((labels > 0) & (labels != 255), np.uint8(1), labels)


def apply_mask_format(values: np.ndarray, mask_format: str | None,
                      merge_objects: bool = False) -> np.ndarray:
    """Mask values as stored (uint8 [H, W]) -> labels: ``binary`` -> {0, 1} (foreground is
    value > 0; computed in place, in ``values``); ``palette`` / ``voc`` / None -> ids as stored
    (0 background, 1..N objects, 255 void), merged by :func:`merge_object_ids` when
    ``merge_objects``."""
    if values.ndim != 2 or values.dtype != np.uint8:
        raise ValueError(f"mask decoded to {values.dtype} {values.shape}, expected uint8 [H, W]")
    if mask_format == "binary":
        return np.minimum(values, 1, out=values)
    return merge_object_ids(values) if merge_objects else values


def decode_mask(data: bytes, mask_format: str | None, merge_objects: bool = False) -> np.ndarray:
    """``mask.png`` bytes -> uint8 [H, W] labels (:func:`apply_mask_format`), read by the one
    mask reader (:func:`pipeline.core.mask_png.read_mask_values`: L, LA's grey channel, 1, P
    indices, 16-bit grey); anything it refuses raises ``ValueError`` saying why."""
    return apply_mask_format(read_mask_values(data), mask_format, merge_objects)


def _parse_json(raw: Mapping[str, Any]) -> dict[str, Any]:
    if "json" not in raw:
        raise IncompleteSampleError("no json member")
    try:
        meta = json.loads(raw["json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise CorruptSampleError(f"bad json member: {exn}") from None
    if not isinstance(meta, dict):
        raise CorruptSampleError("json member is not an object")
    return meta


# ----------------------------------------------------------------------------------------------
# samples


def _sample_kind(raw: Mapping[str, Any]) -> str | None:
    if "00.jpg" in raw:
        return "clip"
    if "jpg" in raw:
        return "image"
    return None


def peek_shape(raw: Mapping[str, Any], kind: Kind | None) -> tuple[int, ...] | None:
    """The HWC shape a raw sample will decode to, from its json (None when unknown)."""
    try:
        meta = json.loads(raw["json"])
        h, w = int(meta["height"]), int(meta["width"])
    except Exception:
        return None
    if (kind or _sample_kind(raw)) == "clip":
        n = sum(1 for k in raw if isinstance(k, str) and FRAME_RE.match(k))
        return (n, h, w, 3) if n else None
    return (h, w, 3)


def frame_members(raw: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    """A clip's frame member names ``00.jpg..NN.jpg``, checked against each other and the json's
    ``frame_ids``; raises :class:`IncompleteSampleError`."""
    names = sorted(k for k in raw if isinstance(k, str) and FRAME_RE.match(k))
    if names != [f"{i:02d}.jpg" for i in range(len(names))]:
        raise IncompleteSampleError(
            f"frame members {names} are not 00.jpg..{len(names) - 1:02d}.jpg")
    ids = meta.get("frame_ids")
    if isinstance(ids, list) and len(ids) != len(names):
        raise IncompleteSampleError(f"{len(names)} frame members but {len(ids)} frame_ids in json")
    return names


def mask_member(raw: Mapping[str, Any], meta: Mapping[str, Any], hw: tuple[int, int],
                merge_objects: bool, hflip: bool) -> torch.Tensor | None:
    """The sample's ``mask.png`` as labels ``[H, W]`` (mirrored with ``hflip``), None when it
    has none and needs none; raises for a bad, mis-sized or missing-but-announced mask."""
    mask_format = meta.get("mask_format")
    if "mask.png" not in raw:
        if mask_format:
            raise IncompleteSampleError(f"mask_format {mask_format!r} but no mask.png member")
        return None
    try:
        labels = decode_mask(raw["mask.png"], mask_format, merge_objects)
    except Exception as exn:  # PIL raises many types; all mean "not a readable mask"
        raise CorruptSampleError(f"bad mask.png: {type(exn).__name__}: {exn}") from None
    if labels.shape != hw:
        raise CorruptSampleError(
            f"mask is {labels.shape[1]}x{labels.shape[0]}, frames {hw[1]}x{hw[0]}")
    m = torch.from_numpy(labels)
    return m.flip(-1) if hflip else m


def decode_frames(raw: Mapping[str, Any], names: list[str], out: torch.Tensor | None = None,
                  hflip: bool = False) -> torch.Tensor:
    """A clip's frames ``names`` -> uint8 [T, 3, H, W], a channels-last view of [T, H, W, 3]
    memory (``out`` when it has that shape: each frame decoded straight into it by
    :func:`decode_jpeg_into`, else copied out of :func:`decode_jpeg`), mirrored with ``hflip``.
    Raises :class:`CorruptSampleError` for a bad frame or frames of different sizes."""
    if out is not None and out.dim() == 4 and out.shape[0] == len(names) \
            and all(decode_jpeg_into(raw[n], out[i], hflip) for i, n in enumerate(names)):
        return out.permute(0, 3, 1, 2)
    decoded = [decode_jpeg(raw[n]) for n in names]
    shape = decoded[0].shape
    if any(d.shape != shape for d in decoded):
        raise CorruptSampleError(f"frames of different sizes: {[tuple(d.shape) for d in decoded]}")
    # the decoders give HWC memory; keep it (channels-last) instead of a transposing copy
    want = (len(decoded),) + tuple(shape[-2:]) + (3,)
    buf = out if out is not None and tuple(out.shape) == want else torch.empty(want,
                                                                            dtype=torch.uint8)
    for i, d in enumerate(decoded):
        _copy_into(d.permute(1, 2, 0), buf[i], hflip)
    return buf.permute(0, 3, 1, 2)


def decode_image(data: bytes, out: torch.Tensor | None = None, hflip: bool = False
                 ) -> torch.Tensor:
    """An image sample's ``jpg`` -> uint8 [3, H, W], a channels-last view (of ``out``, [H, W, 3],
    when it has the image's size), mirrored with ``hflip``."""
    if out is not None and decode_jpeg_into(data, out, hflip):
        return out.permute(2, 0, 1)
    src = decode_jpeg(data).permute(1, 2, 0)  # HWC view of the decoder's memory
    if out is not None and tuple(out.shape) == tuple(src.shape):
        _copy_into(src, out, hflip)
        return out.permute(2, 0, 1)
    return (src.flip(1) if hflip else src).permute(2, 0, 1)


def decode_sample(raw: Mapping[str, Any], kind: Kind | None = None, *,
                  merge_objects: bool = False, masks: bool = True,
                  out: torch.Tensor | None = None, hflip: bool = False) -> dict[str, Any]:
    """Decode one raw sample (as :func:`pipeline.loading.tarsamples.read_tar` gives it); raises
    ``ValueError`` (:class:`CorruptSampleError`, :class:`IncompleteSampleError`, ...),
    ``RuntimeError`` or ``OSError`` when it is corrupt or incomplete (the pipeline counts and
    skips those). ``kind=None`` detects it.

    Returns ``{"key", "shard", "frames" [T,3,H,W] | "image" [3,H,W], "mask" [H,W] or absent,
    "meta"}`` (uint8 tensors; frames/image are channels-last views of HWC memory).
    ``masks=False`` leaves ``mask.png`` alone (not decoded, no "mask" key; TCB pretraining).
    ``out``: an HWC uint8 buffer ([T, H, W, 3] or [H, W, 3], e.g. a slot of a batch) to write the
    pixels into when the shapes match (otherwise it is not used); ``hflip``: mirror frames and
    mask while copying them out of the decoder (the loader's flip-only fast path).
    """
    key, url = raw.get("__key__"), raw.get("__url__")
    found = _sample_kind(raw)
    kind = kind or found
    if kind not in ("clip", "image"):
        raise IncompleteSampleError("no 00.jpg or jpg member")
    meta = _parse_json(raw)
    res: dict[str, Any] = {"key": key, "shard": url}
    try:
        if kind == "clip":
            if found != "clip":
                raise IncompleteSampleError("not a clip sample (no 00.jpg member)")
            res["frames"] = decode_frames(raw, frame_members(raw, meta), out, hflip)
            hw = tuple(res["frames"].shape[-2:])
        else:
            if "jpg" not in raw:
                raise IncompleteSampleError("not an image sample (no jpg member)")
            res["image"] = decode_image(raw["jpg"], out, hflip)
            hw = tuple(res["image"].shape[-2:])
    except RuntimeError as exn:  # e.g. out of memory on a huge frame
        raise CorruptSampleError(f"{type(exn).__name__}: {exn}") from None
    if masks:
        m = mask_member(raw, meta, hw, merge_objects, hflip)
        if m is not None:
            res["mask"] = m
    meta["shard"] = url
    res["meta"] = meta
    return res
