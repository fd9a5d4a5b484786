"""DAVIS readers (docs/layouts.md): ``davis2016`` (the official 2016 release, or the 2016
subset of the 2017 package) and ``davis2017``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.core.errors import InputMissing
from pipeline.sources.base import FolderFiles, Source, frame_number
from pipeline.sources.types import (BAD_LIST, MISSING_IMAGE, MISSING_MASK, SKIP_HINT, Sequence,
                                    SourceError)

log = logging.getLogger(__name__)

RES = "480p"


class _Davis(Source):
    kind = "clip"
    list_dir: str  # ImageSets/<list_dir>/<split>.txt hold one sequence name per line

    def _split_files(self, folder: str) -> list[str]:
        d = self.root / "ImageSets" / folder
        return sorted(p.stem for p in d.glob("*.txt")) if d.is_dir() else []

    def _missing_lists(self, *folders: str) -> SourceError:
        where = " or ".join(str(self.root / "ImageSets" / f) for f in folders)
        return SourceError(self.root, f"no split lists found ({where})",
                           f"pass --src pointing at the {self.name} root (the folder holding "
                           "JPEGImages/, Annotations/ and ImageSets/)", BAD_LIST)

    def _sequences_by_name(self, split: str, require_masks: bool) -> list[Sequence]:
        """Sequence names from ImageSets/<list_dir>/<split>.txt; frames are the folder's JPEGs."""
        names = self.read_split_list(split, self.root / "ImageSets" / self.list_dir /
                                     f"{split}.txt")
        out = []
        for name in sorted(set(names)):
            folder = self.root / "JPEGImages" / RES / name
            if not self.check_name(name, folder):
                continue
            seq = self._folder_sequence(split, name, folder, require_masks)
            if seq is not None:
                out.append(seq)
        return out

    def _folder_sequence(self, split: str, name: str, folder: Path,
                         require_masks: bool) -> Sequence | None:
        files = self.list_frames(folder, ".jpg")
        if files is None:
            return None
        ann = self.root / "Annotations" / RES / name
        present = FolderFiles()  # one scandir of the annotation folder, not a stat per frame
        rows = []
        for n, img in files:
            png = ann / f"{img.stem}.png"
            mask = png if present.is_file(png) else None
            must = require_masks or n == files[0][0]  # 2017: the first frame is always annotated
            if mask is None and must:
                self.fail(SourceError(png, f"mask of frame {img.name} of {name!r} does not exist",
                                      f"restore it from the official release, {SKIP_HINT}",
                                      MISSING_MASK))
                if not require_masks:
                    return None  # a 2017 sequence without its first mask is useless
            rows.append((n, img.stem, img, mask))
        return self.build_sequence(split, name, folder, rows, self.mask_format)


class Davis2016(_Davis):
    """Every frame annotated, masks binary (foreground = value > 0; no void rule)."""

    name = "davis2016"
    mask_format = "binary"
    list_dir = "2016"

    def _is_2017_package(self) -> bool:
        return not self._split_files(RES) and bool(self._split_files(self.list_dir))

    def splits(self) -> list[str]:
        found = self._split_files(self.list_dir if self._is_2017_package() else RES)
        if not found:
            raise self._missing_lists(RES, self.list_dir)
        return found

    def sequences(self, split: str) -> list[Sequence]:
        if self._is_2017_package():
            log.info("%s: reading the DAVIS-2017 package (ImageSets/2016)", self.root)
            return self._sequences_by_name(split, require_masks=True)
        return self._sequences_from_pairs(split)

    def _sequences_from_pairs(self, split: str) -> list[Sequence]:
        """The 2016 release: lines "/JPEGImages/480p/<seq>/<n>.jpg /Annotations/480p/<seq>/<n>.png".
        A missing mask leaves its frame unannotated; a missing or badly named frame leaves the
        whole sequence out (its neighbours would get the wrong temporal distance)."""
        list_file = self.root / "ImageSets" / RES / f"{split}.txt"
        rows: dict[str, list[tuple[int, str, Path, Path | None]]] = {}
        broken: set[str] = set()
        present = FolderFiles()  # one scandir per folder instead of a stat per listed file
        for lineno, line in enumerate(self.read_split_list(split, list_file), 1):
            where = f"(listed in {list_file.name} line {lineno})"
            parsed = self._parse_pair(list_file, lineno, line)
            if parsed is None or parsed[0] in broken:
                continue
            name, img, png = parsed
            if name not in rows and not self.check_name(name, img.parent):
                broken.add(name)
                continue
            try:
                n = frame_number(img)
                if not present.is_file(img):
                    raise SourceError(img, f"frame {img.name} of {name!r} {where} does not exist",
                                      f"restore it from the official release, {SKIP_HINT} (the "
                                      "whole sequence is then left out)", MISSING_IMAGE)
            except SourceError as err:
                self.fail(err)
                broken.add(name)
                continue
            mask = png if present.is_file(png) else None
            if mask is None:
                self.fail(SourceError(png, f"mask of frame {img.name} of {name!r} {where} does "
                                           "not exist",
                                      f"restore it from the official release, {SKIP_HINT}",
                                      MISSING_MASK))
            rows.setdefault(name, []).append((n, img.stem, img, mask))
        seqs = (self.build_sequence(split, name, self.root / "JPEGImages" / RES / name,
                                    rows[name], self.mask_format)
                for name in sorted(set(rows) - broken))
        return [s for s in seqs if s is not None]

    def _parse_pair(self, list_file: Path, lineno: int,
                    line: str) -> tuple[str, Path, Path] | None:
        parts = line.split()
        # string parts, not a Path: this runs once per listed frame
        rel = [q for q in parts[0].strip("/").split("/") if q not in ("", ".")] if parts else []
        if len(parts) != 2 or rel[:2] != ["JPEGImages", RES] or len(rel) != 4:
            self.fail(SourceError(list_file, f"line {lineno} is not '/JPEGImages/{RES}/<seq>/"
                                             f"<frame>.jpg /Annotations/{RES}/<seq>/<frame>.png'"
                                             f": {line!r}",
                                  "restore the list file from the official release", BAD_LIST))
            return None
        return rel[2], self.root.joinpath(*rel), self.root / parts[1].lstrip("/")


class Davis2017(_Davis):
    """Palette masks (0 background, 1..N objects, 255 void); frames without a PNG are
    unannotated (test-dev: only frame 0)."""

    name = "davis2017"
    mask_format = "palette"
    list_dir = "2017"

    def splits(self) -> list[str]:
        found = self._split_files(self.list_dir)
        if not found:
            raise self._missing_lists(self.list_dir)
        return found

    def sequences(self, split: str) -> list[Sequence]:
        return self._sequences_by_name(split, require_masks=False)


def find_davis(explicit: str | os.PathLike | None = None) -> Path | None:
    """The DAVIS-2016 root a command was given (``--davis-root``), checked to hold
    ``JPEGImages/480p``; None when none was given (the caller then uses generated data). There
    is no implicit default: a command reads only the data it is pointed at."""
    if not explicit:
        return None
    root = Path(explicit)
    if (root / "JPEGImages" / "480p").is_dir():
        return root
    raise InputMissing(f"--davis-root {explicit}: no JPEGImages/480p under it; point "
                            "it at a DAVIS-2016 release folder")
