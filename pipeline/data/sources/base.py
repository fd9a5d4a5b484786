"""What every official-layout reader returns, and how it reports bad input.

A reader (one module per layout in this package) lists what a dataset holds: sequences of frames
for the video datasets, (image, mask) pairs for the static ones. It never re-encodes anything: the
preprocessing job copies the source bytes into shards. Reading a file goes through
:func:`load_image` / :func:`load_mask` (``validate.py``), which check it and return its bytes.

Bad input either raises :class:`SourceError` (the default: the message names the file and the
fix) or, when the user asked for it with ``on_error="skip"``, is counted in a :class:`SkipLog`
and left out.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import logging
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

# How a mask's pixel values are to be read.
#  binary  - foreground is value > 0 (DAVIS-2016 0/255 masks, MSRA10K, YouTube-Objects); no void.
#  palette - object ids 1..N, 0 background, 255 void (DAVIS-2017 palette PNGs).
#  voc     - instance ids 1..N, 0 background, 255 void boundary (VOC SegmentationObject).
MaskFormat = Literal["binary", "palette", "voc"]
MASK_FORMATS = ("binary", "palette", "voc")
OnError = Literal["raise", "skip"]


class SourceError(ValueError):
    """Bad input in a source dataset. The message names the file and says how to fix it."""

    def __init__(self, path: Path | str, problem: str, fix: str):
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}. Fix: {fix}")


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


class Source(abc.ABC):
    """A dataset in its official on-disk layout."""

    name: str  # the DATASET name used by launch/preprocess.py
    kind: Literal["clip", "image"]

    def __init__(self, root: str | Path, *, on_error: OnError = "raise",
                 skips: SkipLog | None = None):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(self.root, f"{self.name} root folder does not exist",
                              f"pass --src pointing at the {self.name} dataset root")
        self.on_error = on_error
        self.skips = skips if skips is not None else SkipLog()

    # -- listing ---------------------------------------------------------------------------
    @abc.abstractmethod
    def splits(self) -> list[str]:
        """The splits this copy of the dataset has (from its list files)."""

    def sequences(self, split: str) -> list[Sequence]:
        """Sequences of a split, sorted by name (clip datasets)."""
        raise TypeError(f"{self.name} holds still images: use images()")

    def images(self, split: str) -> list[ImageItem]:
        """Images of a split, sorted by id (image datasets)."""
        raise TypeError(f"{self.name} holds videos: use sequences()")

    # -- reading -----------------------------------------------------------------------------
    def load_image(self, path: Path) -> ImageData:
        from .validate import load_image

        return load_image(path)

    def load_mask(self, path: Path, mask_format: MaskFormat) -> MaskData:
        from .validate import load_mask

        return load_mask(path, mask_format)

    # -- error policy ------------------------------------------------------------------------
    def fail(self, err: SourceError, reason: str) -> None:
        """Raise ``err``, or count it as a skip when the user asked for skipping."""
        if self.on_error == "raise":
            raise err
        self.skips.add(err, reason)
