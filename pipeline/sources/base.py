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
import logging
import os
from pathlib import Path
from typing import Iterable, Literal

from pipeline.sources.types import (MaskFormat, OnError, MISSING_IMAGE, MISSING_SEQUENCE, BAD_NAME,
                                   BAD_LIST, FRAME_GAP, SKIP_HINT, SourceError, SkipLog, Frame,
                                   Sequence, ImageItem, ImageData, MaskData)
from pipeline.sources.validate import check_same_size, load_image, load_mask
from pipeline.core.config import ConfigError

log = logging.getLogger(__name__)

class Source(abc.ABC):
    """A dataset in its official on-disk layout."""

    name: str  # the DATASET name used by launch/preprocess.py
    kind: Literal["clip", "image"]

    def __init__(self, root: str | Path, *, on_error: OnError = "raise",
                 skips: SkipLog | None = None):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
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
    def load_image(self, path: Path, decode: bool = False) -> ImageData:
        return load_image(path, decode=decode)

    def load_mask(self, path: Path, mask_format: MaskFormat) -> MaskData:
        return load_mask(path, mask_format)

    # -- error policy ------------------------------------------------------------------------
    def fail(self, err: SourceError, reason: str | None = None) -> None:
        """Raise ``err``, or count it as a skip (under ``reason``, default ``err.reason``) when
        the user asked for skipping."""
        if self.on_error == "raise":
            raise err
        self.skips.add(err, reason or err.reason)

    # -- full check of listed items (optional; the shard writer may do the same per file) ----
    def load_pair(self, image: Path, mask: Path | None, mask_format: MaskFormat | None,
                  decode: bool = False) -> tuple[ImageData, MaskData | None]:
        """Load an image and its mask (if any) and check they have the same size. Raises."""
        img = self.load_image(image, decode=decode)
        if mask is None:
            return img, None
        assert mask_format is not None
        msk = self.load_mask(mask, mask_format)
        check_same_size(image, img, mask, msk)
        return img, msk

    def validate_sequence(self, seq: Sequence, decode: bool = False) -> bool:
        """Read every frame and mask of ``seq``. On bad input: raise, or (skip) count it and
        return False -- the whole sequence is to be left out, since dropping one frame would give
        its neighbours the wrong temporal distance."""
        try:
            for f in seq.frames:
                self.load_pair(f.image, f.mask, seq.mask_format, decode=decode)
        except SourceError as err:
            self.fail(err)
            return False
        return True

    def validate_image(self, item: ImageItem, decode: bool = False) -> bool:
        """Read an image and its mask; raise, or (skip) count the error and return False."""
        try:
            self.load_pair(item.image, item.mask, item.mask_format, decode=decode)
        except SourceError as err:
            self.fail(err)
            return False
        return True

    # -- listing helpers shared by the readers --------------------------------------------------
    def read_split_list(self, split: str, path: Path) -> list[str]:
        """The stripped non-blank lines of a split list file; it must exist and be non-empty."""
        if not path.is_file():
            try:
                present = ", ".join(self.splits()) or "none"
            except SourceError:
                present = "none"
            raise SourceError(path, f"no list file for split {split!r} of {self.name}",
                              f"restore it from the official release, or use a split that is "
                              f"present ({present})", BAD_LIST)
        try:
            lines = [ln.strip() for ln in path.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(path, f"cannot read split list ({e})",
                              "restore it from the official release", BAD_LIST) from e
        lines = [ln for ln in lines if ln]
        if not lines:
            raise SourceError(path, f"split list for {split!r} is empty",
                              "restore it from the official release (one entry per line)",
                              BAD_LIST)
        return lines

    def check_name(self, name: str, where: Path) -> bool:
        """Names become shard keys: a '.' would make WebDataset split the key. False = skipped."""
        if "." not in name:
            return True
        self.fail(SourceError(where, f"name {name!r} contains a '.', which WebDataset would "
                                     "take as the start of the file extension",
                              f"rename it without dots (e.g. {name.replace('.', '_')!r}) "
                              f"everywhere it appears, {SKIP_HINT}", BAD_NAME))
        return False

    def list_frames(self, folder: Path, suffix: str,
                    prefix: str = "") -> list[tuple[int, Path]] | None:
        """``(number, path)`` of the frame files ``<prefix><number><suffix>`` in ``folder``,
        sorted by number. None when the folder is missing or holds a badly named frame (skip)."""
        if not folder.is_dir():
            self.fail(SourceError(folder, "sequence folder does not exist",
                                  f"restore it from the official release, {SKIP_HINT}",
                                  MISSING_SEQUENCE))
            return None
        try:
            found = [(frame_number(p, prefix), p) for p in folder.iterdir()
                     if p.name.endswith(suffix) and p.is_file()]
        except SourceError as err:
            self.fail(err)
            return None
        return sorted(found)

    def build_sequence(self, split: str, name: str, folder: Path,
                       frames: Iterable[tuple[int, str, Path, Path | None]],
                       mask_format: MaskFormat | None) -> Sequence | None:
        """Sort ``(number, frame_id, image, mask)`` by number and check the numbers are
        consecutive (a missing frame would silently create wrong temporal neighbours).
        Returns None when the sequence was skipped."""
        rows = sorted({r[0]: r for r in frames}.values(), key=lambda r: r[0])
        if not rows:
            self.fail(SourceError(folder, f"sequence {name!r} has no frames",
                                  f"restore its frames, {SKIP_HINT}", MISSING_IMAGE))
            return None
        for (a, fa, *_), (b, fb, *_) in zip(rows, rows[1:]):
            if b != a + 1:
                self.fail(SourceError(folder, f"frames jump from {fa} to {fb} in sequence "
                                              f"{name!r}: frame(s) missing",
                                      f"restore the missing frames, {SKIP_HINT} (the whole "
                                      "sequence is then left out)", FRAME_GAP))
                return None
        return Sequence(self.name, split, name,
                        tuple(Frame(i, fid, img, msk) for i, (_, fid, img, msk) in enumerate(rows)),
                        mask_format)


def frame_number(path: Path, prefix: str = "") -> int:
    """The numeric index in a frame file name such as ``00012.jpg`` or ``frame0012.jpg``."""
    stem = path.stem
    digits = stem[len(prefix):] if stem.startswith(prefix) else ""
    if not digits.isdigit():
        raise SourceError(path, f"frame file name {path.name!r} is not {prefix}<number>",
                          "keep the official frame names (or remove stray files from the folder)",
                          BAD_NAME)
    return int(digits)


class FolderFiles:
    """``is_file`` answered from one ``os.scandir`` per folder (cached), not a ``stat`` per
    path: list files name thousands of frames in a few dozen folders. Same answer as
    ``Path.is_file`` (symlinks followed) for files that do not change while a listing runs."""

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str]] = {}

    def is_file(self, path: Path) -> bool:
        names = self._names.get(path.parent)
        if names is None:
            try:
                with os.scandir(path.parent) as it:
                    names = frozenset(e.name for e in it if e.is_file())
            except OSError:  # no such folder (or unreadable): nothing in it is a file
                names = frozenset()
            self._names[path.parent] = names
        return path.name in names
