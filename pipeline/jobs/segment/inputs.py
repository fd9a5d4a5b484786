"""The three kinds of input as sequence jobs (frames + first mask): DAVIS sequences, YouTube-Objects
shots, a user's video or frame folder."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import ConfigError
from pipeline.jobs.segment.config import SegmentConfig
from pipeline.evaluation.youtube_objects import read_label
from pipeline.sources import get_source
from pipeline.inference.masks import read_mask_png

log = logging.getLogger(__name__)


def _davis_sequences(cfg: SegmentConfig) -> dict[str, tuple]:
    src = get_source("davis2016" if cfg.year == 2016 else "davis2017", cfg.davis_root)
    seqs = {s.name: s for s in src.sequences(cfg.split)}
    if cfg.sequences:
        missing = sorted(set(cfg.sequences) - set(seqs))
        if missing:
            raise ConfigError(f"sequences {missing} are not in {cfg.davis_root} split {cfg.split!r}")
        seqs = {n: seqs[n] for n in cfg.sequences}
    if not seqs:
        raise ConfigError(f"split {cfg.split!r} of {cfg.davis_root} lists no sequence")
    return seqs


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _first_mask(seq, year: int) -> np.ndarray:
    mask = read_mask_png(seq.frames[0].mask)
    if year == 2016:
        mask = np.where(mask == 255, 0, (mask > 0).astype(np.uint8))  # one object, no void
    return mask


@dataclass
class SequenceJob:
    """One sequence to segment: its frames, the stems of its result PNGs, its first mask."""

    frames: list[Path]
    ids: list[str]
    first_mask: Callable[[], np.ndarray]


def davis_jobs(cfg: SegmentConfig) -> dict[str, SequenceJob]:
    return {name: SequenceJob([f.image for f in seq.frames], [f.frame_id for f in seq.frames],
                              lambda seq=seq: _first_mask(seq, cfg.year))
            for name, seq in _davis_sequences(cfg).items()}


def _frame_number(frame_id: str) -> int:
    digits = re.findall(r"\d+", frame_id)
    if not digits:
        raise ValueError(f"frame {frame_id!r} has no number")
    return int(digits[-1])


def youtube_objects_jobs(cfg: SegmentConfig, left_out: list[str] | None = None
                         ) -> dict[str, SequenceJob]:
    """Labelled shots of YouTube-Objects, each from its first labelled frame (the given mask)
    to its end; result PNGs named like the labels (``00001.png`` for ``frame0001.jpg``). A shot
    whose labels show no object is left out with a warning (and its name added to
    ``left_out``)."""
    seqs = {s.name: s for s in get_source("youtube_objects", cfg.youtube_objects_root)
            .sequences("test")}
    if cfg.categories:
        missing = sorted(set(cfg.categories) - {n.split("/", 1)[0] for n in seqs})
        if missing:
            raise ConfigError(f"categories {missing} are not in {cfg.youtube_objects_root} "
                              f"(it has {sorted({n.split('/', 1)[0] for n in seqs})})")
        seqs = {n: s for n, s in seqs.items() if n.split("/", 1)[0] in cfg.categories}
    if cfg.sequences:
        missing = sorted(set(cfg.sequences) - set(seqs))
        if missing:
            raise ConfigError(f"shots {missing} are not in {cfg.youtube_objects_root} "
                              "(names are <class>/<video>/<shot>)")
        seqs = {n: seqs[n] for n in cfg.sequences}
    jobs = {}
    for name, seq in seqs.items():
        # the first labelled frame that shows the object gives the mask to propagate
        first = next((f for f in seq.annotated if read_label(f.mask).any()), None)
        if first is None:
            log.warning("%s: no label shows the object; shot left out", name)
            if left_out is not None:
                left_out.append(name)
            continue
        width = len(first.mask.stem)
        frames = seq.frames[first.index:]
        jobs[name] = SequenceJob(
            [f.image for f in frames], [f"{_frame_number(f.frame_id):0{width}d}" for f in frames],
            lambda path=first.mask: read_label(path).astype(np.uint8))
    if not jobs:
        raise ConfigError(f"{cfg.youtube_objects_root}: no labelled shot to segment")
    return jobs
