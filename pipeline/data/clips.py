"""The sample plan: which shard samples a dataset split turns into (no file is read here).

Clip samples (DESIGN.md section 3): one per annotated frame t of a sequence (every frame for VID),
every ``clip_stride``-th of them, holding frames t-delta .. t, with the first frame repeated for
t < delta as in the paper. Image samples: one per (image, mask) pair.

The plan depends only on the input listing and the settings, never on how the work is split, so
any number of workers or array tasks produce the same samples in the same shards.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .sources.base import ImageItem, MaskFormat, Sequence


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """One sample to write: where its bytes come from, and its catalog fields."""

    key: str
    sequence: str  # image samples: the image id
    images: tuple[Path, ...]  # clip: delta+1 frames, oldest first; image sample: one
    frame_ids: tuple[str, ...] | None  # official frame stems (None for image samples)
    frame_index: int | None  # t
    mask: Path | None
    mask_format: MaskFormat | None
    est_bytes: int  # its size in a tar (for shard rotation), from the file sizes + overheads

    @property
    def is_clip(self) -> bool:
        return self.frame_ids is not None


def clip_indices(t: int, delta: int) -> list[int]:
    """Frame positions of the clip ending at t: t-delta .. t, clamped to the first frame."""
    return [max(t - delta + i, 0) for i in range(delta + 1)]


# Per member: a 512-byte tar header plus padding; per sample: the json record (~300 bytes).
MEMBER_OVERHEAD = 1024
SAMPLE_OVERHEAD = 512


def _size(path: Path | None) -> int:
    return os.stat(path).st_size if path is not None else 0


def plan_clips(sequences: list[Sequence], delta: int, clip_stride: int) -> list[SampleSpec]:
    if delta < 1:
        raise ValueError(f"delta must be >= 1 (the paper uses 4), got {delta}")
    if clip_stride < 1:
        raise ValueError(f"clip stride must be >= 1, got {clip_stride}")
    specs = []
    for seq in sequences:
        with_mask = seq.mask_format is not None
        targets = seq.annotated if with_mask else seq.frames
        for frame in targets[::clip_stride]:
            frames = [seq.frames[i] for i in clip_indices(frame.index, delta)]
            images = tuple(f.image for f in frames)
            specs.append(SampleSpec(
                key=f"{seq.name}/{frame.index:05d}",
                sequence=seq.name,
                images=images,
                frame_ids=tuple(f.frame_id for f in frames),
                frame_index=frame.index,
                mask=frame.mask,
                mask_format=seq.mask_format,
                est_bytes=(sum(_size(p) for p in images) + _size(frame.mask) + SAMPLE_OVERHEAD
                           + MEMBER_OVERHEAD * (len(images) + 2)),
            ))
    return specs


def plan_images(items: list[ImageItem]) -> list[SampleSpec]:
    return [SampleSpec(key=it.image_id, sequence=it.image_id, images=(it.image,), frame_ids=None,
                       frame_index=None, mask=it.mask, mask_format=it.mask_format,
                       est_bytes=_size(it.image) + _size(it.mask) + SAMPLE_OVERHEAD
                       + 3 * MEMBER_OVERHEAD)
            for it in items]


def source_bytes(specs: list[SampleSpec]) -> int:
    """Bytes of the distinct source files the plan reads (the denominator of amplification)."""
    seen: set[Path] = set()
    total = 0
    for s in specs:
        for p in (*s.images, s.mask):
            if p is not None and p not in seen:
                seen.add(p)
                total += _size(p)
    return total


def payload_bytes(specs: list[SampleSpec]) -> int:
    """Source bytes the plan stores, repeats included (the numerator of amplification)."""
    return sum(sum(_size(p) for p in s.images) + _size(s.mask) for s in specs)


def split_into_shards(specs: list[SampleSpec], max_count: int, max_bytes: int) -> list[list[SampleSpec]]:
    """Consecutive groups: a new shard starts when the count or the byte budget would be passed."""
    if max_count < 1 or max_bytes < 1:
        raise ValueError(f"shard limits must be positive (count {max_count}, bytes {max_bytes})")
    shards: list[list[SampleSpec]] = []
    cur: list[SampleSpec] = []
    cur_bytes = 0
    for s in specs:
        if cur and (len(cur) >= max_count or cur_bytes + s.est_bytes > max_bytes):
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(s)
        cur_bytes += s.est_bytes
    if cur:
        shards.append(cur)
    return shards
