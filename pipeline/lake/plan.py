"""The sample plan: which shard samples a dataset split turns into (no file is read here).

Clip samples (docs/architecture.md, the clip contract): one per annotated frame t of a sequence (every frame for VID),
every ``clip_stride``-th of them, holding frames t-delta .. t, with the first frame repeated for
t < delta as in the paper. Image samples: one per (image, mask) pair.

The plan depends only on the input listing and the settings, never on how the work is split, so
any number of workers or array tasks produce the same samples in the same shards.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pipeline.sources.types import ImageItem, MaskFormat, Sequence
from pipeline.core.config import ConfigError


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
    payload: int  # source bytes of its members (file sizes, read once when planning)

    @property
    def is_clip(self) -> bool:
        return self.frame_ids is not None

    @property
    def est_bytes(self) -> int:
        """Its size in a tar (for shard rotation): payload plus headers and the json record."""
        return self.payload + SAMPLE_OVERHEAD + MEMBER_OVERHEAD * (len(self.images) + 2)


def clip_indices(t: int, delta: int) -> list[int]:
    """Frame positions of the clip ending at t: t-delta .. t, clamped to the first frame."""
    return [max(t - delta + i, 0) for i in range(delta + 1)]


# Per member: a 512-byte tar header plus padding; per sample: the json record (~300 bytes).
MEMBER_OVERHEAD = 1024
SAMPLE_OVERHEAD = 512


def _size(path: Path | None) -> int:
    return os.stat(path).st_size if path is not None else 0


def _file_sizes(seq: Sequence) -> tuple[list[int], dict[int, int]]:
    """Sizes of a sequence's frames and masks, one stat per file."""
    frames = [_size(f.image) for f in seq.frames]
    masks = {f.index: _size(f.mask) for f in seq.frames if f.mask is not None}
    return frames, masks


def plan_clips(sequences: list[Sequence], delta: int, clip_stride: int) -> list[SampleSpec]:
    if delta < 1:
        raise ConfigError(f"delta must be >= 1 (the paper uses 4), got {delta}")
    if clip_stride < 1:
        raise ConfigError(f"clip stride must be >= 1, got {clip_stride}")
    specs = []
    for seq in sequences:
        with_mask = seq.mask_format is not None
        targets = seq.annotated if with_mask else seq.frames
        frame_sizes, mask_sizes = _file_sizes(seq)
        for frame in targets[::clip_stride]:
            ids = clip_indices(frame.index, delta)
            frames = [seq.frames[i] for i in ids]
            images = tuple(f.image for f in frames)
            specs.append(SampleSpec(
                key=f"{seq.name}/{frame.index:05d}",
                sequence=seq.name,
                images=images,
                frame_ids=tuple(f.frame_id for f in frames),
                frame_index=frame.index,
                mask=frame.mask,
                mask_format=seq.mask_format,
                payload=sum(frame_sizes[i] for i in ids) + mask_sizes.get(frame.index, 0),
            ))
    return specs


def plan_images(items: list[ImageItem]) -> list[SampleSpec]:
    return [SampleSpec(key=it.image_id, sequence=it.image_id, images=(it.image,), frame_ids=None,
                       frame_index=None, mask=it.mask, mask_format=it.mask_format,
                       payload=_size(it.image) + _size(it.mask))
            for it in items]


def source_bytes(specs: list[SampleSpec]) -> int:
    """Bytes of the distinct source files the plan reads (the denominator of amplification)."""
    paths = {p for s in specs for p in (*s.images, s.mask) if p is not None}
    return sum(_size(p) for p in paths)


def payload_bytes(specs: list[SampleSpec]) -> int:
    """Source bytes the plan stores, repeats included (the numerator of amplification)."""
    return sum(s.payload for s in specs)


def split_into_shards(specs: list[SampleSpec], max_count: int, max_bytes: int) -> list[list[SampleSpec]]:
    """Consecutive groups: a new shard starts when the count or the byte budget would be passed."""
    if max_count < 1 or max_bytes < 1:
        raise ConfigError(f"shard limits must be positive (count {max_count}, bytes {max_bytes})")
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
