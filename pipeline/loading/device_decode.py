"""Decoding on the trainer's device (``data.decode_device``): workers send each clip's JPEG bytes
(~0.5 MB instead of ~6 MB of pixels per 854x480 clip), and the trainer decodes a whole batch at
once with ``torchvision.io.decode_jpeg(..., device=...)`` (nvJPEG on CUDA), then applies the
frame-consistent flip drawn in the worker and the resize to the preset's size there.

Worker side, :func:`split_sample`: the sample's checks (member names, frame count against the
json, JPEG headers and sizes), the flip coin (the same single draw as the CPU path, so both paths
flip the same clips), the mask decoded and flipped on the CPU (PNG has no device decoder).
Trainer side, :func:`decode_batch`: one batched decode; a batch the device decoder refuses is
decoded clip by clip, and clips that still fail are dropped and counted (``corrupt_samples``).
Only flip-only presets (optionally with a resize) can decode on the device; the others rotate,
scale or crop per sample on the CPU.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Mapping

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from pipeline.loading.augment import AugmentConfig, augment_clip, coin
from pipeline.loading.decode import (CorruptSampleError, FRAME_RE, IncompleteSampleError,
                                     _parse_json, frame_members, mask_member)
from pipeline.loading.process import flip_only
from pipeline.loading.readstats import ReadStats


def check_config(cfg: AugmentConfig) -> None:
    if not flip_only(cfg):
        raise ValueError("data.decode_device: only flip-only augmentation presets (e.g. "
                         "tcb_pretrain: flip + size) decode on the device; this preset rotates, "
                         "scales, crops or reverses time per sample: use decode_device: cpu")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(H, W) from a JPEG's header (no pixel decoded); CorruptSampleError if it is not one."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise ValueError(f"{im.format}, not JPEG")
            return im.height, im.width
    except Exception as exn:  # PIL raises many types; all mean "not a readable JPEG"
        raise CorruptSampleError(f"bad JPEG header: {type(exn).__name__}: {exn}") from None


def split_sample(raw: Mapping[str, Any], cfg: AugmentConfig, gen: torch.Generator | None, *,
                 masks: bool = True, merge_objects: bool = False) -> dict[str, Any]:
    """A raw clip sample -> ``{"key", "jpeg": [T uint8 1-D tensors], "mask" [H, W] (flipped),
    "hw", "meta"}`` for :func:`decode_batch`. Raises like
    :func:`pipeline.loading.decode.decode_sample` for corrupt or incomplete samples."""
    if not any(isinstance(k, str) and FRAME_RE.match(k) for k in raw):
        raise IncompleteSampleError("not a clip sample (no 00.jpg member)")
    meta = _parse_json(raw)
    names = frame_members(raw, meta)
    sizes = {_jpeg_size(raw[n]) for n in names}
    if len(sizes) != 1:
        raise CorruptSampleError(f"frames of different sizes: {sorted(sizes)}")
    hw = sizes.pop()
    flip = coin(cfg.hflip, gen)  # the CPU path's single draw
    out: dict[str, Any] = {"key": raw.get("__key__"), "hw": hw,
                           "jpeg": [torch.frombuffer(bytearray(raw[n]), dtype=torch.uint8)
                                    for n in names]}
    if masks:
        m = mask_member(raw, meta, hw, merge_objects, flip)
        if m is not None:
            out["mask"] = m
    meta["shard"] = raw.get("__url__")
    meta["augment"] = None if cfg.is_identity else {"hflip": flip, "angle": 0.0, "scale": 1.0,
                                                    "crop": None, "time_reverse": False}
    out["meta"] = meta
    return out


def collate_bytes(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of split samples: the JPEG bytes as lists, masks stacked on the CPU."""
    batch: dict[str, Any] = {"jpeg": [s["jpeg"] for s in samples],
                             "key": [s["key"] for s in samples],
                             "meta": [s["meta"] for s in samples]}
    if any("mask" in s for s in samples):
        hw = samples[0]["hw"]
        has = torch.tensor(["mask" in s for s in samples])
        batch["mask"] = torch.stack([s.get("mask", torch.full(hw, 255, dtype=torch.uint8))
                                     for s in samples])
        if not bool(has.all()):
            batch["has_mask"] = has
    return batch


def _decode_clip(jpegs: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    frames = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    return torch.stack(frames)  # [T, 3, H, W]


def decode_batch(batch: dict[str, Any], device: "str | torch.device", cfg: AugmentConfig,
                 stats: ReadStats | None = None) -> dict[str, Any]:
    """Decode a bytes batch on ``device``: ``frames`` [B, T, 3, H, W] uint8 there, flipped as the
    worker drew, resized to ``cfg.size``; ``mask`` moved there too. Clips the decoder refuses
    are dropped (counted in ``stats``)."""
    device = torch.device(device)
    clips = batch.pop("jpeg")
    flat = [t for clip in clips for t in clip]
    try:
        decoded = decode_jpeg(flat, mode=ImageReadMode.RGB, device=device)
        per_clip, i = [], 0
        for clip in clips:
            per_clip.append(torch.stack(decoded[i:i + len(clip)]))
            i += len(clip)
        keep = list(range(len(clips)))
    except RuntimeError:  # a clip nvJPEG/libjpeg refuses: find it, drop it, count it
        per_clip, keep = [], []
        for j, clip in enumerate(clips):
            try:
                per_clip.append(_decode_clip(clip, device))
                keep.append(j)
            except RuntimeError as exn:
                if stats is not None:
                    stats.record("corrupt_samples", batch["meta"][j].get("shard"), batch["key"][j],
                                 f"device JPEG decode failed: {str(exn).splitlines()[0][:120]}")
    size = tuple(cfg.size) if cfg.size is not None else None
    resize = dataclasses.replace(cfg, hflip=0.0)
    out_frames, out_masks = [], []
    masks = batch.get("mask")
    for j, frames in zip(keep, per_clip):
        aug = batch["meta"][j].get("augment") or {}
        mask = masks[j].to(device) if masks is not None else None
        if aug.get("hflip"):
            frames = frames.flip(-1)
        if size is not None and tuple(frames.shape[-2:]) != size:
            frames, mask, _ = augment_clip(frames, mask, resize, None)
        out_frames.append(frames)
        out_masks.append(mask)
    out = {k: [v[j] for j in keep] for k, v in batch.items() if k in ("key", "meta")}
    if out_frames:  # the worker path's memory layout (HWC, channels-last views): same numerics
        frames = torch.stack(out_frames)
        out["frames"] = frames.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    else:
        out["frames"] = torch.empty(0, dtype=torch.uint8, device=device)
    if masks is not None and out_masks:
        out["mask"] = torch.stack(out_masks)
        if "has_mask" in batch:
            out["has_mask"] = batch["has_mask"][keep]
    for k, v in batch.items():
        if k not in out and k not in ("mask", "has_mask", "key", "meta"):
            out[k] = v
    return out
