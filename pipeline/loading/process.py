"""One raw shard sample -> tensors: decode, mask rule, frame-consistent augmentation; a sample
that fails is counted and skipped, never fatal."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from pipeline.loading.augment import AugmentConfig, augment_clip, coin
from pipeline.loading.decode import CorruptSampleError, decode_sample, IncompleteSampleError, Kind
from pipeline.loading.readstats import ReadStats


# ----------------------------------------------------------------------------------------------
# one raw sample -> a decoded, augmented sample


def count_failure(stats: ReadStats, raw: Mapping[str, Any], exn: Exception) -> None:
    if isinstance(exn, (CorruptSampleError, IncompleteSampleError)):
        stats.record(exn.reason, raw.get("__url__"), raw.get("__key__"), str(exn))
    else:
        stats.record("corrupt_samples", raw.get("__url__"), raw.get("__key__"),
                     f"{type(exn).__name__}: {exn}")


_DECODE_ERRORS = (ValueError, RuntimeError, OSError, SyntaxError)
_NO_AUGMENT = {"hflip": False, "angle": 0.0, "scale": 1.0, "crop": None, "time_reverse": False}


def flip_only(cfg: AugmentConfig) -> bool:
    """Whether the config is at most a flip (plus a resize to a size the sample may already have):
    then the flip is done while copying out of the JPEG decoder, into the batch."""
    return (cfg.crop is None and cfg.rotate_deg == 0 and cfg.scale == (1.0, 1.0)
            and cfg.time_reverse == 0)


def process_sample(raw: Mapping[str, Any], kind: Kind | None, merge_objects: bool, cfg: AugmentConfig,
             gen: torch.Generator | None, stats: ReadStats, slot: torch.Tensor | None = None,
             masks: bool = True) -> dict[str, Any] | None:
    """Decode + augment one raw sample; None (counted, warned) when it is corrupt.

    With a flip-only config, the flip coin is drawn first (the same single draw
    :func:`augment_clip` would make) and the flip is fused into the decoder's copy (into ``slot``
    when given); a resize, if the size differs, follows. Same results as decode-then-augment."""
    if raw.get("__bad__"):
        return None  # already counted by the reader
    fast = flip_only(cfg)
    flip = fast and coin(cfg.hflip, gen)  # no draw when hflip == 0
    try:
        sample = decode_sample(raw, kind, merge_objects=merge_objects, masks=masks,
                               out=slot if fast else None, hflip=flip)
    except _DECODE_ERRORS as exn:
        count_failure(stats, raw, exn)
        return None
    stats.samples += 1
    if cfg.is_identity:
        sample["meta"]["augment"] = None
        return sample
    name = "frames" if "frames" in sample else "image"
    x = sample[name]
    if fast:
        params = dict(_NO_AUGMENT, hflip=flip)
        if cfg.size is not None and tuple(cfg.size) != tuple(x.shape[-2:]):
            frames, mask, _ = augment_clip(x if name == "frames" else x[None], sample.get("mask"),
                                           dataclasses.replace(cfg, hflip=0.0), gen)
            sample[name] = frames if name == "frames" else frames[0]
            if mask is not None:
                sample["mask"] = mask
    else:
        frames, mask, params = augment_clip(x if name == "frames" else x[None], sample.get("mask"),
                                            cfg, gen)
        sample[name] = frames if name == "frames" else frames[0]
        if mask is not None:
            sample["mask"] = mask
    sample["meta"]["augment"] = params
    return sample
