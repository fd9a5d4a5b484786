"""ILSVRC2015 VID reader (docs/layouts.md): snippets of JPEG frames, no masks."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.sources.base import Source
from pipeline.sources.types import (BAD_LIST, MISSING_IMAGE, MISSING_SEQUENCE, SKIP_HINT, Sequence,
                                    SourceError)

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

    def _parse_line(self, split: str, path: Path, lineno: int, line: str) -> tuple[str, str | None] | None:
        """``(snippet, frame or None)`` of one list line, or None when it was skipped.

        Official form (the default): ``<snippet> <n>`` in ``train_N.txt``
        (``ILSVRC2015_VID_train_0000/ILSVRC2015_train_00030000 1``) and ``<snippet>/<frame> <i>``
        in ``val.txt`` (``ILSVRC2015_val_00000000/000000 1``, i a running index). The ``train/`` /
        ``val/``-prefixed lines of later projects (e.g. FGFA's ``VID_train_15frames.txt``:
        ``train/<snippet> 1 <frame> <frames>``) are accepted too."""
        fields = line.split()
        parts = fields[0].strip("/").split("/")
        if parts[0] == split:
            parts = parts[1:]
        problem = None
        if not parts or any(not p for p in parts) or parts[0] in SPLITS:
            problem = "does not name a snippet of this split"
        elif any(not f.lstrip("-").isdigit() for f in fields[1:]):
            problem = "has a non-numeric field after the path"
        elif split == "train" and len(parts) != 2:
            problem = ("is not '<ILSVRC2015_VID_train_000K>/<snippet> <n>' (the official "
                       "train_N.txt form)")
        elif split == "val" and not (len(parts) == 2 and parts[1].isdigit()
                                     or len(parts) == 1):
            problem = "is not '<snippet>/<frame> <i>' (the official val.txt form)"
        if problem:
            example = ("ILSVRC2015_VID_train_0000/ILSVRC2015_train_00030000 1" if split == "train"
                       else "ILSVRC2015_val_00000000/000000 1")
            self.fail(SourceError(path, f"line {lineno} {problem}: {line!r}",
                                  f"restore the list file from the official release (lines like "
                                  f"{example!r}), {SKIP_HINT}", BAD_LIST))
            return None
        if split == "val" and len(parts) == 2:
            return parts[0], parts[1]
        return "/".join(parts), None

    def _snippets(self, split: str) -> dict[str, tuple[Path, int, set[str]]]:
        """Snippet path below Data/VID/<split>/ -> (list file, line, frames it lists), in name
        order; deduplicated over the files (a train snippet is in the file of every class it
        shows)."""
        files = self._list_files(split)
        if not files:
            if not self.lists.is_dir() and (self.data / split).is_dir():
                log.info("%s: no ImageSets/VID, scanning %s for snippets", self.base,
                         self.data / split)
                depth = "*/*" if split == "train" else "*"
                return {str(p.relative_to(self.data / split)).replace("\\", "/"): (p, 0, set())
                        for p in sorted((self.data / split).glob(depth)) if p.is_dir()}
            expected = self.lists / ("train_1.txt" if split == "train" else "val.txt")
            self.read_split_list(split, expected)  # raises: missing list, present splits named
        found: dict[str, tuple[Path, int, set[str]]] = {}
        for f in files:
            for lineno, line in enumerate(self.read_split_list(split, f), 1):
                parsed = self._parse_line(split, f, lineno, line)
                if parsed is None:
                    continue
                name, frame = parsed
                entry = found.setdefault(name, (f, lineno, set()))
                if frame is not None:
                    entry[2].add(frame)
        return dict(sorted(found.items()))

    def sequences(self, split: str) -> list[Sequence]:
        if split not in SPLITS:
            raise SourceError(self.lists, f"{self.name} has no split {split!r}",
                              f"use one of {', '.join(SPLITS)}")
        out = []
        for name, (listed_in, lineno, listed_frames) in self._snippets(split).items():
            folder = self.data / split / name
            where = f" (listed in {listed_in.name}, line {lineno})" if lineno else ""
            if not self.check_name(name, folder):
                continue
            if not folder.is_dir():
                self.fail(SourceError(folder, f"snippet {name!r}{where} has no frames folder",
                                      f"restore Data/VID/{split}/{name}/ from the official "
                                      f"release, {SKIP_HINT}", MISSING_SEQUENCE))
                continue
            files = self.list_frames(folder, ".JPEG")
            if files is None:
                continue
            if not files:
                other = sorted(p.name for p in folder.iterdir() if p.is_file())[:3]
                hint = f"; it holds {', '.join(other)}" if other else ""
                self.fail(SourceError(folder, f"snippet {name!r}{where} has no frames "
                                              f"(%06d.JPEG){hint}",
                                      f"restore its frames from the official release, "
                                      f"{SKIP_HINT}", MISSING_IMAGE))
                continue
            missing = sorted(listed_frames - {p.stem for _, p in files})
            if missing:
                self.fail(SourceError(folder / f"{missing[0]}.JPEG",
                                      f"frame {missing[0]} of snippet {name!r}{where} does not "
                                      f"exist ({len(missing)} listed frame(s) missing)",
                                      f"restore the snippet's frames from the official release, "
                                      f"{SKIP_HINT}", MISSING_IMAGE))
                continue
            seq = self.build_sequence(split, name, folder,
                                      [(n, p.stem, p, None) for n, p in files], None)
            if seq is not None:
                out.append(seq)
        return out
