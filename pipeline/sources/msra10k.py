"""MSRA10K reader (docs/layouts.md): ``<id>.jpg`` + ``<id>.png`` side by side in ``Imgs/``."""

from __future__ import annotations

from pathlib import Path

from pipeline.sources.base import Source
from pipeline.sources.types import MISSING_MASK, SKIP_HINT, ImageItem, SourceError


class Msra10k(Source):
    name = "msra10k"
    kind = "image"
    mask_format = "binary"

    def __init__(self, root: str | Path, **kw):
        super().__init__(root, **kw)
        for cand in (self.root / "MSRA10K_Imgs_GT" / "Imgs", self.root / "Imgs", self.root):
            if cand.is_dir() and any(cand.glob("*.jpg")):
                self.folder = cand
                break
        else:
            raise SourceError(self.root, "no MSRA10K_Imgs_GT/Imgs/*.jpg found",
                              "pass --src pointing at the folder holding MSRA10K_Imgs_GT/ (or "
                              "at MSRA10K_Imgs_GT/ or its Imgs/ folder)")

    def splits(self) -> list[str]:
        return ["train"]

    def images(self, split: str) -> list[ImageItem]:
        if split != "train":
            raise SourceError(self.folder, f"{self.name} has no split {split!r}",
                              "use split 'train' (MSRA10K has one split)")
        out = []
        for img in sorted(self.folder.glob("*.jpg"), key=lambda p: p.stem):
            if not self.check_name(img.stem, img):
                continue
            png = img.with_suffix(".png")
            if not png.is_file():
                self.fail(SourceError(png, f"mask of image {img.name} does not exist",
                                      f"restore it from the official release, {SKIP_HINT}",
                                      MISSING_MASK))
                continue
            out.append(ImageItem(self.name, split, img.stem, img, png, self.mask_format))
        return out
