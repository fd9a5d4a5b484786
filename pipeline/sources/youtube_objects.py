"""YouTube-Objects v1 frames with the Jain & Grauman masks (docs/layouts.md)."""

from __future__ import annotations

from pathlib import Path

from pipeline.sources.base import Source
from pipeline.sources.types import (BAD_LIST, MISSING_IMAGE, SKIP_HINT, MaskData, MaskFormat,
                                    Sequence, SourceError)
from pipeline.sources.validate import load_jpeg_label

THRESHOLD = 15  # the release's foreground threshold on its grayscale JPEG labels


class YoutubeObjects(Source):
    """Sequences ``<class>/<video>/<shot>`` that have labels; all their frames are listed (for
    temporal neighbours), only labelled frames carry a mask path."""

    name = "youtube_objects"
    kind = "clip"
    mask_format = "binary"

    def __init__(self, root: str | Path, **kw):
        super().__init__(root, **kw)
        self.frames_root, self.masks_root = self.root / "v1", self.root / "youtube_masks"
        for d in (self.frames_root, self.masks_root):
            if not d.is_dir():
                raise SourceError(d, "folder does not exist",
                                  "pass --src pointing at the folder holding v1/ (frames) and "
                                  "youtube_masks/ (labels)", BAD_LIST)

    def splits(self) -> list[str]:
        return ["test"]

    def sequences(self, split: str) -> list[Sequence]:
        if split != "test":
            raise SourceError(self.root, f"{self.name} has no split {split!r}",
                              "use split 'test' (YouTube-Objects has one split)")
        labels = sorted(self.masks_root.glob("*/data/*/shots/*/labels"))
        if not labels:
            raise SourceError(self.masks_root, "no <class>/data/<video>/shots/<shot>/labels "
                                               "folders found",
                              "restore youtube_masks/ from the release", BAD_LIST)
        out = []
        for label_dir in labels:
            cls, _, video, _, shot = label_dir.relative_to(self.masks_root).parts[:5]
            name = f"{cls}/{video}/{shot}"
            folder = self.frames_root / cls / "data" / video / "shots" / shot
            if self.check_name(name, label_dir):
                seq = self._sequence(split, name, folder, label_dir)
                if seq is not None:
                    out.append(seq)
        return sorted(out, key=lambda s: s.name)

    def _sequence(self, split: str, name: str, folder: Path, label_dir: Path) -> Sequence | None:
        frames = self.list_frames(folder, ".jpg", prefix="frame")
        masks = self.list_frames(label_dir, ".jpg")
        if frames is None or masks is None:
            return None
        by_number = dict(masks)
        numbers = {n for n, _ in frames}
        for n, label in masks:
            if n not in numbers:
                self.fail(SourceError(label, f"label {label.name} has no frame "
                                             f"frame{n:04d}.jpg in {folder}",
                                      f"restore the frames of the shot, {SKIP_HINT} (the whole "
                                      "sequence is then left out)", MISSING_IMAGE))
                return None
        return self.build_sequence(split, name, folder,
                                   [(n, p.stem, p, by_number.get(n)) for n, p in frames],
                                   self.mask_format)

    def load_mask(self, path: Path, mask_format: MaskFormat) -> MaskData:
        """The thresholded JPEG label as a 0/255 PNG (the one place bytes are re-encoded)."""
        return load_jpeg_label(path, THRESHOLD)
