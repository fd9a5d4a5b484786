"""ILSVRC2015 VID reader (docs/layouts.md): snippets of JPEG frames, no masks."""

from __future__ import annotations

import logging
from pathlib import Path

from .base import BAD_LIST, Sequence, Source, SourceError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


class IlsvrcVid(Source):
    name = "ilsvrc_vid"
    kind = "clip"
    mask_format = None

    def __init__(self, root: str | Path, **kw):
        super().__init__(root, **kw)
        for cand in (self.root, self.root / "ILSVRC2015", self.root / "ILSVRC"):
            if (cand / "Data" / "VID").is_dir():
                self.base = cand
                break
        else:
            raise SourceError(self.root, "no Data/VID folder found",
                              "pass --src pointing at the ILSVRC2015 folder (the one holding "
                              "Data/VID/) or at its parent")
        self.data = self.base / "Data" / "VID"
        self.lists = self.base / "ImageSets" / "VID"

    def _list_files(self, split: str) -> list[Path]:
        pattern = "train_*.txt" if split == "train" else "val.txt"
        return sorted(self.lists.glob(pattern)) if self.lists.is_dir() else []

    def splits(self) -> list[str]:
        found = [s for s in SPLITS if self._list_files(s) or (self.data / s).is_dir()]
        if not found:
            raise SourceError(self.data, "neither Data/VID/train nor Data/VID/val exists",
                              "restore the VID frames from the official release", BAD_LIST)
        return found

    def _snippets(self, split: str) -> list[str]:
        """Snippet paths below Data/VID/<split>/, deduplicated and sorted."""
        files = self._list_files(split)
        if not files:
            if not self.lists.is_dir() and (self.data / split).is_dir():
                log.info("%s: no ImageSets/VID, scanning %s for snippets", self.base,
                         self.data / split)
                depth = "*/*" if split == "train" else "*"
                return sorted(str(p.relative_to(self.data / split)).replace("\\", "/")
                              for p in (self.data / split).glob(depth) if p.is_dir())
            expected = self.lists / ("train_1.txt" if split == "train" else "val.txt")
            self.read_split_list(split, expected)  # raises: missing list, present splits named
        names: set[str] = set()
        for f in files:
            for lineno, line in enumerate(self.read_split_list(split, f), 1):
                path = line.split()[0].strip("/")
                head, _, rest = path.partition("/")
                if head != split or not rest:
                    self.fail(SourceError(f, f"line {lineno} does not start with "
                                             f"'{split}/': {line!r}",
                                          "restore the list file from the official release",
                                          BAD_LIST))
                    continue
                # train lines name snippets; val lines name frames (<snippet>/<frame>)
                names.add(rest if split == "train" else rest.rpartition("/")[0] or rest)
        return sorted(names)

    def sequences(self, split: str) -> list[Sequence]:
        if split not in SPLITS:
            raise SourceError(self.lists, f"{self.name} has no split {split!r}",
                              f"use one of {', '.join(SPLITS)}")
        out = []
        for name in self._snippets(split):
            folder = self.data / split / name
            if not self.check_name(name, folder):
                continue
            files = self.list_frames(folder, ".JPEG")
            if files is None:
                continue
            seq = self.build_sequence(split, name, folder,
                                      [(n, p.stem, p, None) for n, p in files], None)
            if seq is not None:
                out.append(seq)
        return out
