"""Readers of the official on-disk dataset layouts (docs/layouts.md), by dataset name."""

from __future__ import annotations

from pathlib import Path

from .base import (ImageData, ImageItem, MaskData, Frame, Sequence, SkipLog, Source,
                   SourceError)
from .davis import Davis2016, Davis2017
from .ilsvrc_vid import IlsvrcVid
from .msra10k import Msra10k
from .voc import Voc2012
from .youtube_objects import YoutubeObjects

SOURCES: dict[str, type[Source]] = {
    cls.name: cls for cls in (Davis2016, Davis2017, Msra10k, Voc2012, IlsvrcVid, YoutubeObjects)
}


def get_source(name: str, root: str | Path, **kw) -> Source:
    """The reader for dataset ``name`` over ``root``; ``kw``: on_error, skips."""
    try:
        cls = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: "
                         f"{', '.join(sorted(SOURCES))}") from None
    return cls(root, **kw)


__all__ = ["SOURCES", "get_source", "Source", "SourceError", "SkipLog", "Sequence", "Frame",
           "ImageItem", "ImageData", "MaskData", "Davis2016", "Davis2017", "Msra10k", "Voc2012",
           "IlsvrcVid", "YoutubeObjects"]
