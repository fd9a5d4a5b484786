"""The one dataset registry: every official-layout reader by its dataset name, and the kind
(``clip`` or ``image``) it declares. The preprocessing job, the synthetic writers and the
jobs read the list of datasets from here."""

from __future__ import annotations

from pathlib import Path

from pipeline.sources.base import Source
from pipeline.sources.davis import Davis2016, Davis2017
from pipeline.sources.ilsvrc_vid import IlsvrcVid
from pipeline.sources.msra10k import Msra10k
from pipeline.sources.voc import Voc2012
from pipeline.sources.youtube_objects import YoutubeObjects
from pipeline.core.config import ConfigError

SOURCES: dict[str, type[Source]] = {
    cls.name: cls for cls in (Davis2016, Davis2017, Msra10k, Voc2012, IlsvrcVid, YoutubeObjects)
}


def get_source(name: str, root: str | Path, **kw) -> Source:
    """The reader for dataset ``name`` over ``root``; ``kw``: on_error, skips."""
    try:
        cls = SOURCES[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; valid names: "
                         f"{', '.join(sorted(SOURCES))}") from None
    return cls(root, **kw)


def dataset_kind(name: str) -> str:
    """``clip`` (videos) or ``image`` (still images with masks) for dataset ``name``."""
    try:
        return SOURCES[name].kind
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; valid names: "
                         f"{', '.join(sorted(SOURCES))}") from None
