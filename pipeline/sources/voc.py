"""PASCAL VOC 2012 reader (docs/layouts.md): images with their SegmentationObject masks."""

from __future__ import annotations

from pathlib import Path

from pipeline.sources.base import Source
from pipeline.sources.types import (BAD_LIST, MISSING_IMAGE, MISSING_MASK, SKIP_HINT, ImageItem,
                                    SourceError)


class Voc2012(Source):
    name = "voc2012"
    kind = "image"
    mask_format = "voc"

    def __init__(self, root: str | Path, **kw):
        super().__init__(root, **kw)
        for cand in (self.root / "VOCdevkit" / "VOC2012", self.root / "VOC2012", self.root):
            if (cand / "JPEGImages").is_dir() and (cand / "ImageSets").is_dir():
                self.base = cand
                break
        else:
            raise SourceError(self.root, "no VOCdevkit/VOC2012/{JPEGImages,ImageSets} found",
                              "pass --src pointing at the folder holding VOCdevkit/ (or at "
                              "VOCdevkit/ or VOC2012/)")
        self.lists = self.base / "ImageSets" / "Segmentation"

    def splits(self) -> list[str]:
        found = sorted(p.stem for p in self.lists.glob("*.txt"))
        if not found:
            raise SourceError(self.lists, "no segmentation split lists (*.txt) found",
                              "restore ImageSets/Segmentation from the official release",
                              BAD_LIST)
        return found

    def images(self, split: str) -> list[ImageItem]:
        out = []
        for image_id in sorted(set(self.read_split_list(split, self.lists / f"{split}.txt"))):
            img = self.base / "JPEGImages" / f"{image_id}.jpg"
            png = self.base / "SegmentationObject" / f"{image_id}.png"
            if not self.check_name(image_id, img):
                continue
            for path, what, reason in ((img, "image", MISSING_IMAGE), (png, "mask", MISSING_MASK)):
                if not path.is_file():
                    self.fail(SourceError(path, f"{what} of {image_id!r} (listed in "
                                                f"{split}.txt) does not exist",
                                          f"restore it from the official release, {SKIP_HINT}",
                                          reason))
                    break
            else:
                out.append(ImageItem(self.name, split, image_id, img, png, self.mask_format))
        return out
