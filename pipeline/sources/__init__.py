"""Readers of the official on-disk dataset layouts (docs/layouts.md), one module per layout, and
the registry that finds them by dataset name."""

from __future__ import annotations

from pipeline.sources.base import Source
from pipeline.sources.davis import Davis2016, Davis2017
from pipeline.sources.ilsvrc_vid import IlsvrcVid
from pipeline.sources.msra10k import Msra10k
from pipeline.sources.registry import SOURCES, dataset_kind, get_source
from pipeline.sources.types import (Frame, ImageData, ImageItem, MaskData, Sequence, SkipLog,
                                    SourceError)
from pipeline.sources.voc import Voc2012
from pipeline.sources.youtube_objects import YoutubeObjects

__all__ = ["SOURCES", "dataset_kind", "get_source", "Source", "SourceError", "SkipLog",
           "Sequence", "Frame", "ImageItem", "ImageData", "MaskData", "Davis2016", "Davis2017",
           "Msra10k", "Voc2012", "IlsvrcVid", "YoutubeObjects"]
