"""Writing one shard: ``NNNNN.tar`` + ``NNNNN.parquet`` + ``NNNNN_stats.json`` (written last).

The tar is deterministic (sorted plan order, mtime 0, no owner names), so the same plan always
gives the same bytes; every file is written atomically. A shard whose stats file exists is
finished and is skipped on re-runs, provided it was built from the same plan (its digest);
anything else (a tar without stats, temp files of a killed run) is rebuilt.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import PipelineError
from pipeline.core.atomic import atomic_open, atomic_write_text, fsync_dir, remove_stale_temps
from pipeline.lake.contract import read_stats, shard_paths
from pipeline.lake.plan import SampleSpec
from pipeline.lake.tarwrite import TarWriter
from pipeline.sources.base import Source
from pipeline.sources.types import ImageData, SourceError
from pipeline.sources.validate import check_same_size

CATALOG_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("shard", pa.string()),
    ("dataset", pa.string()),
    ("split", pa.string()),
    ("sequence", pa.string()),
    ("frame_ids", pa.list_(pa.string())),  # null for image samples
    ("frame_index", pa.int32()),  # t; null for image samples
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("n_objects", pa.int32()),
    ("objects", pa.list_(pa.int32())),
    ("mask_format", pa.string()),
    ("has_mask", pa.bool_()),
    ("empty_mask", pa.bool_()),
    ("members", pa.list_(pa.string())),  # member extensions, in tar order
    ("bytes", pa.int64()),  # payload bytes of the sample's members
    ("sha256", pa.string()),  # over (name, size, SHA-256 of data) of each member, in order
])


class ShardPlanMismatch(PipelineError, RuntimeError):
    pass


def plan_digest(specs: list[SampleSpec], root: Path, settings: dict) -> str:
    """Identifies what a shard is built from: its samples' source files (relative) and settings."""

    prefix = root.as_posix().rstrip("/") + "/"

    def rel(p: Path | None) -> str | None:  # Path.relative_to, by string (3k paths per split)
        if p is None:
            return None
        text = p.as_posix()
        return text[len(prefix):] if text.startswith(prefix) else text

    doc = {"settings": settings,
           "samples": [[s.key, [rel(p) for p in s.images], rel(s.mask), s.est_bytes] for s in specs]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass
class ShardResult:
    index: int
    count: int
    bytes: int
    seconds: float
    failures: dict
    skipped: bool = False  # already finished by an earlier run


class _ImageCache:
    """Consecutive clips share delta of their delta+1 frames: read (and hash) each file once."""

    def __init__(self, source: Source, decode: bool, size: int = 32):
        self.source, self.decode, self.size = source, decode, size
        self.items: collections.OrderedDict[Path, tuple[ImageData, bytes]] = \
            collections.OrderedDict()

    def get(self, path: Path) -> tuple[ImageData, bytes]:
        """The image and the SHA-256 digest of its bytes."""
        hit = self.items.get(path)
        if hit is None:
            image = self.source.load_image(path, decode=self.decode)
            hit = (image, member_digest(image.data))
            self.items[path] = hit
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        else:
            self.items.move_to_end(path)
        return hit


def build_sample(spec: SampleSpec, cache: _ImageCache, dataset: str, split: str
                 ) -> tuple[list[tuple[str, bytes]], dict]:
    """The sample's tar members (name, bytes) and its catalog row. Raises SourceError."""
    cached = [cache.get(p) for p in spec.images]
    images = [img for img, _ in cached]
    first = images[0]
    for p, img in zip(spec.images[1:], images[1:]):
        if (img.width, img.height) != (first.width, first.height):
            raise SourceError(p, f"frame is {img.width}x{img.height} but frame {spec.images[0].name} "
                                 f"of the same sequence is {first.width}x{first.height}",
                              "all frames of a sequence must have one size; re-export the sequence")
    mask = None
    if spec.mask is not None:
        mask = cache.source.load_mask(spec.mask, spec.mask_format)
        check_same_size(spec.images[-1], images[-1], spec.mask, mask)
    meta = {"dataset": dataset, "split": split, "sequence": spec.sequence,
            "height": first.height, "width": first.width,
            "objects": list(mask.objects) if mask else [], "mask_format": spec.mask_format}
    if spec.is_clip:
        meta["frame_ids"] = list(spec.frame_ids)
        meta["frame_index"] = spec.frame_index
        members = [(f"{i:02d}.jpg", img.data) for i, img in enumerate(images)]
    else:
        members = [("jpg", first.data)]
    digests = [d for _, d in cached]
    if mask is not None:
        members.append(("mask.png", mask.data))
    members.append(("json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()))
    digests += [member_digest(data) for _, data in members[len(digests):]]
    row = {"key": spec.key, "dataset": dataset, "split": split, "sequence": spec.sequence,
           "frame_ids": meta.get("frame_ids"), "frame_index": spec.frame_index,
           "height": first.height, "width": first.width, "n_objects": len(meta["objects"]),
           "objects": meta["objects"], "mask_format": spec.mask_format,
           "has_mask": mask is not None, "empty_mask": mask is not None and not mask.objects,
           "members": [n for n, _ in members], "bytes": sum(len(d) for _, d in members),
           "sha256": sample_digest(members, digests)}
    return members, row


def _member_key(name: str, data: bytes) -> bytes:
    return name.encode() + b"\0" + len(data).to_bytes(8, "little")


def legacy_sample_digest(members: list[tuple[str, bytes]]) -> str:
    """The catalog ``sha256`` of lakes written before 2026-12-03 (SHA-256 over name, size and
    data of each member, in order): still accepted by ``launch/catalog.py --validate --deep``."""
    h = hashlib.sha256()
    for name, data in members:
        h.update(_member_key(name, data) + data)
    return h.hexdigest()


def member_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sample_digest(members: list[tuple[str, bytes]], digests: list[bytes] | None = None) -> str:
    """The catalog's ``sha256`` of a sample: SHA-256 over (name, size, SHA-256 of the data) of
    each member, in order. Hashing members one by one lets the writer hash a frame once for the
    delta+1 clips that hold it (``digests``: the members' :func:`member_digest`, if known)."""
    if digests is None:
        digests = [member_digest(data) for _, data in members]
    h = hashlib.sha256()
    for (name, data), digest in zip(members, digests, strict=True):
        h.update(_member_key(name, data) + digest)
    return h.hexdigest()


def write_parquet(path: Path, rows: list[dict], sync_dir: bool = True) -> None:
    table = pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    with atomic_open(path, sync_dir=sync_dir) as f:
        f.write(buf.getvalue())


def write_shard(out_dir: Path, index: int, specs: list[SampleSpec], source: Source, *,
                dataset: str, split: str, digest: str, verify: str = "header",
                throttle: float = 0.0) -> ShardResult:
    """Write shard ``index`` of ``out_dir`` from ``specs`` (skipped when already finished)."""
    tar_path, pq_path, stats_path = shard_paths(out_dir, index)
    stats = read_stats(stats_path)
    if stats is not None:
        if stats.get("plan_digest") != digest:
            raise ShardPlanMismatch(
                f"{stats_path}: this finished shard was built from other inputs or settings than "
                f"this run's. Fix: write to a new --out folder, or delete {out_dir} to rebuild it")
        return ShardResult(index, stats["count"], stats["bytes"], 0.0, stats["failures"], True)
    for p in (tar_path, pq_path, stats_path):
        remove_stale_temps(out_dir, p.name)
    start = time.perf_counter()
    cache = _ImageCache(source, decode=(verify == "decode"))
    before = collections.Counter(source.skips.counts)
    rows = []
    shard_file = tar_path.name
    with atomic_open(tar_path, sync_dir=False) as f:
        with TarWriter(f) as tar:
            for spec in specs:
                try:
                    members, row = build_sample(spec, cache, dataset, split)
                except SourceError as err:
                    source.fail(err)
                    continue
                for name, data in members:
                    tar.add(f"{spec.key}.{name}", data)
                    if throttle:  # fault-injection hook for the kill/resume tests
                        time.sleep(throttle)
                row["shard"] = shard_file
                rows.append(row)
    size = tar_path.stat().st_size
    write_parquet(pq_path, rows, sync_dir=False)
    fsync_dir(out_dir)  # both renames durable before the stats file marks the shard finished
    failures = dict(source.skips.counts - before)
    result = ShardResult(index, len(rows), size, time.perf_counter() - start, failures)
    atomic_write_text(stats_path, json.dumps({
        "shard": shard_file, "count": len(rows), "bytes": size, "failures": failures,
        "seconds": round(result.seconds, 3), "plan_digest": digest,
        "payload_bytes": sum(r["bytes"] for r in rows),
    }, indent=1, sort_keys=True) + "\n")
    return result
