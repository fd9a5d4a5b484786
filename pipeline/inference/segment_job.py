"""The segmentation job behind ``launch/segment.py``: online tuning + segmentation of DAVIS
sequences (official results layout) or of a user's video, spread over ranks, then evaluation.

* DAVIS: ``davis_root``/``year``/``split`` (``sequences`` to pick some). Under ``torchrun`` the
  sequences are split over ranks, balanced by frame count; each rank writes its own sequences'
  ``<out>/<sequence>/<frame>.png``; a sequence's result never depends on the rank count.
  Rank 0 then writes ``timing.json`` (tuning and inference seconds per frame, per sequence) and,
  with ``evaluate``, scores ``<out>`` with the official protocol into ``<out>/eval/``.
* A video: ``video`` (mp4, ...) or ``frames`` (a folder of images) plus ``first_mask`` (object
  ids of the first frame): masks in ``<out>/masks/`` and an overlay video ``<out>/overlay.gif``
  (or ``overlay_format: mp4``), like the paper's Fig. 3.

MLflow (rank 0): a run ``segment`` (nested under ``$STCNN_PARENT_RUN_ID``) with the config, the
per-frame timings, J/F/T, the CSV tables, the per-sequence bar plot, overlays of a few sequences
and the lucid-dream examples of the first one.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.atomic import atomic_write_text
from pipeline.config import ConfigError, from_dict, to_dict
from pipeline.dist import DistConfig, DistContext, barrier, init_distributed
from pipeline.model.config import ModelConfig
from pipeline.tracking import Tracker, TrackingConfig, environment_info, git_info, resolve_init
from pipeline.train.online import OnlineConfig, OnlineSegmenter, assign_sequences


@dataclass
class SegmentConfig:
    checkpoint: str | None = None        # weights.pt, runs:/ or models:/ URI of the STCNN
    out: str = "runs/segment"
    model_overrides: list[str] = field(default_factory=list)  # on the checkpoint's model config
    online: OnlineConfig = field(default_factory=OnlineConfig)
    # DAVIS
    davis_root: str | None = None
    year: int = 2016                     # 2016 or 2017
    split: str = "val"
    sequences: list[str] | None = None
    evaluate: bool = True
    print_table: bool = True             # print the J/F table (the main job prints it at its end)
    overlays: int = 2                    # sequences whose overlay GIF is logged
    # a user's video
    video: str | None = None
    frames: str | None = None
    first_mask: str | None = None
    fps: float = 24.0
    overlay_format: Literal["gif", "mp4"] = "gif"
    dist: DistConfig = field(default_factory=lambda: DistConfig(timeout_s=1800.0))
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(run_name="segment"))


def load_checkpoint_weights(uri: str) -> tuple[dict, dict]:
    """(state dicts by branch, stored model config) of a weights.pt or its URI."""
    from pipeline.train.weights import load_weights

    payload = load_weights(resolve_init(uri))
    return payload["models"], payload.get("model_config") or {}


def _davis_sequences(cfg: SegmentConfig) -> dict[str, tuple]:
    from pipeline.data.sources import get_source

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


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _first_mask(seq, year: int) -> np.ndarray:
    from pipeline.inference.masks import read_mask_png

    mask = read_mask_png(seq.frames[0].mask)
    if year == 2016:
        mask = np.where(mask == 255, 0, (mask > 0).astype(np.uint8))  # one object, no void
    return mask


def _gather(obj, ctx: DistContext) -> list:
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def run_davis(cfg: SegmentConfig, segmenter: OnlineSegmenter, ctx: DistContext, tracker) -> dict:
    from pipeline.inference.video import write_sequence_masks

    out = Path(cfg.out)
    seqs = _davis_sequences(cfg)
    mine = assign_sequences({n: len(s.frames) for n, s in seqs.items()}, ctx.world_size)[ctx.rank]
    timings = {}
    for name in mine:
        seq = seqs[name]
        frames = [_read_rgb(f.image) for f in seq.frames]
        result = segmenter.segment(name, frames, _first_mask(seq, cfg.year))
        write_sequence_masks(out / name, [f.frame_id for f in seq.frames], result.masks)
        timings[name] = result.timing() | {"loss_first": float(np.mean([c[0] for c in result.losses.values()])),
                                           "loss_last": float(np.mean([c[-1] for c in result.losses.values()])),
                                           "rank": ctx.rank}
        print(f"[segment] rank {ctx.rank}: {name} ({result.frames} frames, "
              f"{len(result.objects)} object(s)) tune {timings[name]['tune_s_per_frame']:.2f} "
              f"s/frame, infer {timings[name]['infer_s_per_frame']:.3f} s/frame", flush=True)
    all_timings: dict = {}
    for part in _gather(timings, ctx):
        all_timings.update(part)
    summary: dict = {"sequences": len(seqs), "world_size": ctx.world_size, "out": str(out)}
    if not ctx.is_main:
        return summary
    n = sum(t["frames"] - 1 for t in all_timings.values()) or 1
    summary["timing"] = {
        "tune_s_per_frame": sum(t["tune_s"] for t in all_timings.values()) / n,
        "infer_s_per_frame": sum(t["infer_s"] for t in all_timings.values()) / n}
    summary["timing"]["total_s_per_frame"] = sum(summary["timing"].values())
    atomic_write_text(out / "timing.json", json.dumps(
        {"overall": summary["timing"], "sequences": all_timings}, indent=2, sort_keys=True))
    tracker.log_metrics({f"time/{k}": v for k, v in summary["timing"].items()}, step=0)
    tracker.log_artifact(out / "timing.json")
    if cfg.evaluate:
        summary["evaluation"] = evaluate_results(cfg, out, tracker)
    for name in sorted(seqs)[: cfg.overlays]:
        _log_overlay(seqs[name], out / name, out / "overlays" / f"{name}.gif", tracker)
    return summary


def evaluate_results(cfg: SegmentConfig, out: Path, tracker) -> dict:
    from pipeline.evaluation.davis import evaluate_davis, format_tables, write_outputs

    report = evaluate_davis(cfg.davis_root, out, cfg.year, cfg.split, sequences=cfg.sequences)
    files = write_outputs(report, out / "eval")
    table = format_tables(report)
    if cfg.print_table:
        print(table, flush=True)
    g = report.global_row()
    metrics = {"JF-Mean": g[0], "J-Mean": g[1], "J-Recall": g[2], "J-Decay": g[3],
               "F-Mean": g[4], "F-Recall": g[5], "F-Decay": g[6]}
    if report.has_t:
        metrics["T-Mean"] = report.global_t()[0]
    tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items() if v == v}, step=0)
    for p in files.values():
        tracker.log_artifact(p, "eval")
    return {"metrics": metrics, "table": table, "files": {k: str(v) for k, v in files.items()}}


def _log_overlay(seq, result_dir: Path, path: Path, tracker) -> None:
    from pipeline.inference.masks import read_mask_png
    from pipeline.inference.video import write_overlay_video

    frames = [_read_rgb(f.image) for f in seq.frames]
    masks = [read_mask_png(result_dir / f"{f.frame_id}.png") for f in seq.frames]
    write_overlay_video(path, frames, masks, fps=8)
    tracker.log_artifact(path, "overlays")


def run_video(cfg: SegmentConfig, segmenter: OnlineSegmenter, tracker) -> dict:
    from pipeline.inference.masks import read_mask_png
    from pipeline.inference.video import (read_frames_dir, read_video, write_overlay_video,
                                          write_sequence_masks)

    if not cfg.first_mask:
        raise ConfigError("--first-mask is required with --video/--frames: the object ids of "
                          "the first frame (indexed or 0/255 PNG)")
    if cfg.video:
        frames, fps = read_video(cfg.video)
        ids = [f"{i:05d}" for i in range(len(frames))]
        name = Path(cfg.video).stem
    else:
        frames, ids = read_frames_dir(cfg.frames)
        fps, name = cfg.fps, Path(cfg.frames).name
    mask = read_mask_png(cfg.first_mask)
    result = segmenter.segment(name, frames, mask)
    out = Path(cfg.out)
    write_sequence_masks(out / "masks", ids, result.masks)
    overlay = write_overlay_video(out / f"overlay.{cfg.overlay_format}", frames, result.masks,
                                  fps=fps or cfg.fps)
    timing = result.timing()
    atomic_write_text(out / "timing.json", json.dumps(timing, indent=2))
    tracker.log_metrics({f"time/{k}": float(v) for k, v in timing.items()}, step=0)
    tracker.log_artifact(overlay, "overlays")
    print(f"[segment] {name}: {result.frames} frames -> {out / 'masks'}, overlay {overlay}; "
          f"tune {timing['tune_s_per_frame']:.2f} s/frame, infer "
          f"{timing['infer_s_per_frame']:.3f} s/frame", flush=True)
    return {"masks": str(out / "masks"), "overlay": str(overlay), "timing": timing}


def run_segment(cfg: SegmentConfig) -> dict:
    modes = [bool(cfg.davis_root), bool(cfg.video), bool(cfg.frames)]
    if sum(modes) != 1:
        raise ConfigError("give exactly one of --davis-root, --video or --frames")
    if not cfg.checkpoint:
        raise ConfigError("--checkpoint is required: the weights.pt of launch/train_offline.py, "
                          "or its runs:/ or models:/stcnn@ALIAS URI")
    ctx = init_distributed(cfg.dist)
    try:
        weights, stored = load_checkpoint_weights(cfg.checkpoint)
        model_cfg = from_dict(ModelConfig, stored, cfg.model_overrides, where=cfg.checkpoint)
        segmenter = OnlineSegmenter(model_cfg, weights, cfg.online, ctx.device)
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        tracker = Tracker(cfg.tracking, phase="segment", run_dir=out, rank=ctx.rank,
                          default_store=out.parent)
        params = to_dict(cfg) | {"model_config": to_dict(model_cfg)}
        tracker.start(params, {"phase": "segment", **environment_info(ctx.world_size, ctx.device),
                               **git_info()})
        t0 = time.perf_counter()
        try:
            if cfg.davis_root:
                summary = run_davis(cfg, segmenter, ctx, tracker)
                if ctx.is_main:
                    _log_dream_examples(cfg, tracker)
            else:
                summary = run_video(cfg, segmenter, tracker) if ctx.is_main else {}
        except BaseException:
            tracker.end("FAILED")
            raise
        summary["seconds"] = time.perf_counter() - t0
        summary["mlflow_run_id"] = getattr(tracker, "run_id", None)
        if ctx.is_main:
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
        tracker.end("FINISHED")
        barrier(ctx)
        return summary
    finally:
        from pipeline.dist import destroy
        destroy()


def _log_dream_examples(cfg: SegmentConfig, tracker) -> None:
    """The lucid-dream examples of the first sequence, as a PNG grid in the run."""
    from pipeline.data.lucid_dream import LucidDreamConfig, save_example_grid

    seqs = _davis_sequences(cfg)
    seq = seqs[sorted(seqs)[0]]
    path = Path(cfg.out) / "lucid_dream_examples.png"
    save_example_grid(path, _read_rgb(seq.frames[0].image), _first_mask(seq, cfg.year), n=8,
                      seed=cfg.online.seed, cfg=LucidDreamConfig(**cfg.online.lucid))
    tracker.log_artifact(path, "lucid_dream")


def main_cli(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.config import load_config

    p = argparse.ArgumentParser(description="Online tuning + segmentation (and evaluation)")
    p.add_argument("--config", default=None, help="YAML (see configs/segment.yaml)")
    p.add_argument("--checkpoint", help="weights.pt, runs:/ or models:/stcnn@ALIAS")
    p.add_argument("--davis-root")
    p.add_argument("--year", type=int, choices=[2016, 2017])
    p.add_argument("--split")
    p.add_argument("--sequences", nargs="+")
    p.add_argument("--video")
    p.add_argument("--frames")
    p.add_argument("--first-mask")
    p.add_argument("--out")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. online.iterations=50")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_intermixed_args(argv)
    over = list(a.overrides)
    for key, value in (("checkpoint", a.checkpoint), ("davis_root", a.davis_root),
                       ("year", a.year), ("split", a.split), ("video", a.video),
                       ("frames", a.frames), ("first_mask", a.first_mask), ("out", a.out)):
        if value is not None:
            over.append(f"{key}={value}")
    if a.sequences:
        over.append("sequences=[" + ",".join(a.sequences) + "]")
    try:
        cfg = load_config(SegmentConfig, a.config, over)
        run_segment(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
