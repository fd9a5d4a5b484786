"""Indexing image shards for the FFCV store: which members make a sample, where their bytes lie
in the tar, and the digest of the inputs (decode and resize helpers included)."""

from __future__ import annotations

import dataclasses
import logging
import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.ids_resize import resize_ids_nearest
from pipeline.lake.contract import split_member, stats_path
from pipeline.lake.tario import iter_member_offsets, TarFormatError
from pipeline.loading.decode import decode_jpeg, MASK_FORMATS
from pipeline.loading.ffcv.format import StoreError

log = logging.getLogger(__name__)


IMAGE_MODES = ("raw", "jpg")


class NoFinishedShards(PipelineError, FileNotFoundError):
    """A shard directory holds no finished shard (``NNNNN.tar`` with its ``NNNNN_stats.json``)."""


# ------------------------------------------------------------------------------------------------
# Pixels and labels of a sample, as stored


def decode_image(data: bytes) -> np.ndarray:
    """Source JPEG bytes -> (H, W, 3) uint8 RGB: the WebDataset loader's pixels
    (:func:`pipeline.loading.decode.decode_jpeg`), as a numpy array."""
    return np.ascontiguousarray(decode_jpeg(data).permute(1, 2, 0).numpy())


def resize_mask_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) labels -> (H, W) by the one id-resize rule (:mod:`pipeline.core.ids_resize`,
    ``nearest-exact``; the loader's JIT code gives the same result)."""
    return resize_ids_nearest(labels, size)


def _fit_resolution(h: int, w: int, max_resolution: int | None) -> tuple[int, int]:
    """FFCV's ``max_resolution`` rule: shrink so that the longer side is at most the limit."""
    if not max_resolution or max(h, w) <= max_resolution:
        return h, w
    ratio = max_resolution / max(h, w)
    return max(1, int(ratio * h)), max(1, int(ratio * w))


# ------------------------------------------------------------------------------------------------
# Indexing shards (the loader's tar parser: only jpg / png / json members are read, by offset)


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
    groups: dict[str, dict[str, _Member]] = {}  # in tar order
    label = _shard_label(tar)
    samples, problems = [], []
    with open(tar, "rb") as f:
        try:
            for name, offset, size in iter_member_offsets(f):
                key, ext = split_member(name)
                if key is not None:
                    groups.setdefault(key, {})[ext] = _Member(offset, size)
        except (TarFormatError, UnicodeDecodeError) as e:
            raise StoreError(f"{label}: unreadable tar ({e}); check the set with "
                             f"`python launch/catalog.py {tar.parent} --validate`") from e
        for key, members in groups.items():
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
        stats = stats_path(tar)
        h.update(_shard_label(tar).encode())
        h.update(str(tar.stat().st_size).encode())
        h.update(stats.read_bytes())
    return h.hexdigest()
