"""The types every official-layout reader returns (sequences, frames, images, masks), the
reasons a file is left out, and the error that names the file and the fix."""

from __future__ import annotations

import collections
import dataclasses
import logging
from pathlib import Path
from typing import Literal

from pipeline.core.errors import FileProblem

log = logging.getLogger(__name__)

# How a mask's pixel values are to be read.
#  binary  - foreground is value > 0 (DAVIS-2016 0/255 masks, MSRA10K, YouTube-Objects); no void.
#  palette - object ids 1..N, 0 background, 255 void (DAVIS-2017 palette PNGs).
#  voc     - instance ids 1..N, 0 background, 255 void boundary (VOC SegmentationObject).
MaskFormat = Literal["binary", "palette", "voc"]
MASK_FORMATS = ("binary", "palette", "voc")
OnError = Literal["raise", "skip"]

# Reasons a file or sequence is left out (the keys of SkipLog.counts).
MISSING_IMAGE = "missing_image"
MISSING_MASK = "missing_mask"
MISSING_SEQUENCE = "missing_sequence"
BAD_NAME = "bad_name"
BAD_LIST = "bad_list"
FRAME_GAP = "frame_gap"
BAD_IMAGE = "bad_image"
BAD_MASK = "bad_mask"
SIZE_MISMATCH = "size_mismatch"

SKIP_HINT = "or leave it out and count it with --on-error skip (on_error='skip' in Python)"


class SourceError(FileProblem):
    """Bad input in a source dataset. The message names the file and says how to fix it."""

    def __init__(self, path: Path | str, problem: str, fix: str, reason: str = "bad_input"):
        super().__init__(path, problem, fix)
        self.reason = reason  # the SkipLog key used when this error is skipped


class SkipLog:
    """Counts what a reader (or the preprocessing job) left out, by reason, with the files."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.items: list[tuple[str, str]] = []  # (path, message)

    def add(self, err: SourceError, reason: str) -> None:
        self.counts[reason] += 1
        self.items.append((err.path, str(err)))
        log.warning("skipped (%s): %s", reason, err)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(sorted(self.counts.items())),
                "files": [p for p, _ in self.items]}


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame of a sequence."""

    index: int  # 0-based position in the sequence (t in the paper)
    frame_id: str  # the official file stem, e.g. "00000" (DAVIS) or "000000" (VID)
    image: Path
    mask: Path | None  # None: frame not annotated (VID, sparse YouTube-Objects labels)


@dataclasses.dataclass(frozen=True)
class Sequence:
    """A video: its frames in temporal order. Names keep their official spelling."""

    dataset: str
    split: str
    name: str
    frames: tuple[Frame, ...]
    mask_format: MaskFormat | None  # None: the dataset has no masks (VID)

    @property
    def annotated(self) -> tuple[Frame, ...]:
        return tuple(f for f in self.frames if f.mask is not None)


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """A still image with its mask (MSRA10K, VOC)."""

    dataset: str
    split: str
    image_id: str
    image: Path
    mask: Path
    mask_format: MaskFormat


@dataclasses.dataclass(frozen=True)
class ImageData:
    data: bytes  # the file's bytes, unchanged
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class MaskData:
    data: bytes  # PNG bytes: the source file unchanged, except where a layout stores non-PNG masks
    width: int
    height: int
    objects: tuple[int, ...]  # object ids present (binary masks: (1,) if any foreground)
