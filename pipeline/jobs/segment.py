"""The segmentation job behind ``launch/segment.py``: online tuning + segmentation of DAVIS
sequences (official results layout) or of a user's video, spread over ranks, then evaluation.

* DAVIS: ``davis_root``/``year``/``split`` (``sequences`` to pick some). Under ``torchrun`` the
  sequences are split over ranks, balanced by frame count; each rank writes its own sequences'
  ``<out>/<sequence>/<frame>.png``; a sequence's result never depends on the rank count.
  Rank 0 then writes ``timing.json`` (tuning and inference seconds per frame, per sequence) and,
  with ``evaluate``, scores ``<out>`` with the official protocol into ``<out>/eval/``.
* YouTube-Objects: ``youtube_objects_root`` (``categories``/``sequences`` to pick some): every
  labelled shot is segmented from its first labelled frame, whose label is the given mask, to
  its last frame; ``<out>/<class>/<video>/<shot>/<NNNNN>.png`` named like the labels; with
  ``evaluate``, mean IoU per category over the labelled frames into ``<out>/eval/``.
* A video: ``video`` (mp4, ...) or ``frames`` (a folder of images) plus ``first_mask`` (object
  ids of the first frame): masks in ``<out>/masks/`` and an overlay video ``<out>/overlay.gif``
  (or ``overlay_format: mp4``), like the paper's Fig. 3.

MLflow (rank 0): a run ``segment`` (nested under ``$STCNN_PARENT_RUN_ID``) with the config, the
per-frame timings, J/F/T, the CSV tables, the per-sequence bar plot, overlays of a few sequences
and the lucid-dream examples of the first one.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.core.atomic import atomic_write_text
from pipeline.core.config import ConfigError, from_dict, to_dict
from pipeline.core.dist import DistConfig, DistContext, barrier, init_distributed
from pipeline.model.config import ModelConfig
from pipeline.tracking import Tracker, TrackingConfig, environment_info, git_info
from pipeline.train.phases.online import OnlineConfig, OnlineSegmenter, assign_sequences


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
    # YouTube-Objects (evaluation only: one split, sparse labels)
    youtube_objects_root: str | None = None
    categories: list[str] | None = None  # e.g. [cat, dog]; None: all
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
    from pipeline.train.weights import fetch_weights

    payload = fetch_weights(uri, what="--checkpoint")
    return payload["models"], payload.get("model_config") or {}


def _davis_sequences(cfg: SegmentConfig) -> dict[str, tuple]:
    from pipeline.sources import get_source

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


def youtube_objects_jobs(cfg: SegmentConfig) -> dict[str, SequenceJob]:
    """Labelled shots of YouTube-Objects, each from its first labelled frame (the given mask)
    to its end; result PNGs named like the labels (``00001.png`` for ``frame0001.jpg``)."""
    from pipeline.sources import get_source
    from pipeline.evaluation.youtube_objects import read_label

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
            print(f"[segment] {name}: no label shows the object; shot left out", file=sys.stderr)
            continue
        width = len(first.mask.stem)
        frames = seq.frames[first.index:]
        jobs[name] = SequenceJob(
            [f.image for f in frames], [f"{_frame_number(f.frame_id):0{width}d}" for f in frames],
            lambda path=first.mask: read_label(path).astype(np.uint8))
    if not jobs:
        raise ConfigError(f"{cfg.youtube_objects_root}: no labelled shot to segment")
    return jobs


def run_sequences(cfg: SegmentConfig, jobs: dict[str, SequenceJob], segmenter: OnlineSegmenter,
                  ctx: DistContext, tracker, evaluate: Callable[[], dict] | None) -> dict:
    """Segment ``jobs`` spread over the ranks (balanced by frame count), each rank writing its
    own ``<out>/<name>/<id>.png``; then, on rank 0: timings, ``evaluate()``, overlays."""
    from pipeline.inference.video import write_sequence_masks

    out = Path(cfg.out)
    mine = assign_sequences({n: len(j.frames) for n, j in jobs.items()}, ctx.world_size)[ctx.rank]
    timings = {}
    for name in mine:
        job = jobs[name]
        frames = [_read_rgb(p) for p in job.frames]
        result = segmenter.segment(name, frames, job.first_mask())
        write_sequence_masks(out / name, job.ids, result.masks)
        timings[name] = result.timing() | {"loss_first": float(np.mean([c[0] for c in result.losses.values()])),
                                           "loss_last": float(np.mean([c[-1] for c in result.losses.values()])),
                                           "rank": ctx.rank}
        print(f"[segment] rank {ctx.rank}: {name} ({result.frames} frames, "
              f"{len(result.objects)} object(s)) tune {timings[name]['tune_s_per_frame']:.2f} "
              f"s/frame, infer {timings[name]['infer_s_per_frame']:.3f} s/frame", flush=True)
    all_timings: dict = {}
    for part in _gather(timings, ctx):
        all_timings.update(part)
    summary: dict = {"sequences": len(jobs), "world_size": ctx.world_size, "out": str(out)}
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
    if evaluate is not None:
        summary["evaluation"] = evaluate()
    for name in sorted(jobs)[: cfg.overlays]:
        _log_overlay(jobs[name], out / name,
                     out / "overlays" / f"{name.replace('/', '_')}.gif", tracker)
    _log_dream_examples(cfg, jobs[sorted(jobs)[0]], tracker)
    return summary


def run_davis(cfg: SegmentConfig, segmenter: OnlineSegmenter, ctx: DistContext, tracker) -> dict:
    return run_sequences(cfg, davis_jobs(cfg), segmenter, ctx, tracker,
                         (lambda: evaluate_results(cfg, Path(cfg.out), tracker))
                         if cfg.evaluate else None)


def run_youtube_objects(cfg: SegmentConfig, segmenter: OnlineSegmenter, ctx: DistContext,
                        tracker) -> dict:
    return run_sequences(cfg, youtube_objects_jobs(cfg), segmenter, ctx, tracker,
                         (lambda: evaluate_youtube_objects_results(cfg, Path(cfg.out), tracker))
                         if cfg.evaluate else None)


def evaluate_results(cfg: SegmentConfig, out: Path, tracker) -> dict:
    from pipeline.evaluation.davis import evaluate_davis, format_tables, write_outputs

    report = evaluate_davis(cfg.davis_root, out, cfg.year, cfg.split, sequences=cfg.sequences)
    g = report.global_row()
    metrics = {"JF-Mean": g[0], "J-Mean": g[1], "J-Recall": g[2], "J-Decay": g[3],
               "F-Mean": g[4], "F-Recall": g[5], "F-Decay": g[6]}
    if report.has_t:
        metrics["T-Mean"] = report.global_t()[0]
    return _report(cfg, tracker, metrics, format_tables(report), write_outputs(report, out / "eval"))


def _report(cfg: SegmentConfig, tracker, metrics: dict, table: str, files: dict) -> dict:
    """An evaluation's table printed (``print_table``), its metrics and files in the run."""
    if cfg.print_table:
        print(table, flush=True)
    tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items() if v == v}, step=0)
    for p in files.values():
        tracker.log_artifact(p, "eval")
    return {"metrics": metrics, "table": table, "files": {k: str(v) for k, v in files.items()}}


def evaluate_youtube_objects_results(cfg: SegmentConfig, out: Path, tracker) -> dict:
    from pipeline.evaluation.youtube_objects import (evaluate_youtube_objects, format_table,
                                                     write_outputs)

    report = evaluate_youtube_objects(cfg.youtube_objects_root, out, categories=cfg.categories,
                                      shots=cfg.sequences)
    metrics = {"mIoU": report.mean()} | {f"mIoU/{c}": m for c, m, _, _ in report.per_category()}
    return _report(cfg, tracker, metrics, format_table(report), write_outputs(report, out / "eval"))


def _log_overlay(job: SequenceJob, result_dir: Path, path: Path, tracker) -> None:
    from pipeline.inference.masks import read_mask_png
    from pipeline.inference.video import write_overlay_video

    frames = [_read_rgb(p) for p in job.frames]
    masks = [read_mask_png(result_dir / f"{i}.png") for i in job.ids]
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
    modes = [bool(cfg.davis_root), bool(cfg.youtube_objects_root), bool(cfg.video),
             bool(cfg.frames)]
    if sum(modes) != 1:
        raise ConfigError("give exactly one of --davis-root, --youtube-objects-root, --video "
                          "or --frames")
    if not cfg.checkpoint:
        raise ConfigError("--checkpoint is required: the weights.pt of launch/train_offline.py, "
                          "or its runs:/ or models:/stcnn@ALIAS URI")
    ctx = init_distributed(cfg.dist)
    try:
        weights, stored = load_checkpoint_weights(cfg.checkpoint)
        model_cfg = from_dict(ModelConfig, stored, cfg.model_overrides, where=cfg.checkpoint)
        if cfg.dist.compile and ctx.is_main:
            print("[segment] note: dist.compile is not applied to online tuning (each sequence "
                  "and object tunes a fresh SSB copy, which would be recompiled every time); "
                  "dist.precision and dist.channels_last do apply", file=sys.stderr, flush=True)
        segmenter = OnlineSegmenter(model_cfg, weights, cfg.online, ctx.device, dist=cfg.dist)
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
            elif cfg.youtube_objects_root:
                summary = run_youtube_objects(cfg, segmenter, ctx, tracker)
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
        from pipeline.core.dist import destroy
        destroy()


def _log_dream_examples(cfg: SegmentConfig, job: SequenceJob, tracker) -> None:
    """The lucid-dream examples of the first sequence, as a PNG grid in the run."""
    from pipeline.train.lucid import LucidDreamConfig, save_example_grid

    path = Path(cfg.out) / "lucid_dream_examples.png"
    save_example_grid(path, _read_rgb(job.frames[0]), job.first_mask(), n=8,
                      seed=cfg.online.seed, cfg=LucidDreamConfig(**cfg.online.lucid))
    tracker.log_artifact(path, "lucid_dream")


def main_cli(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.core.config import load_config

    p = argparse.ArgumentParser(description="Online tuning + segmentation (and evaluation)")
    p.add_argument("--config", default=None, help="YAML (see configs/segment.yaml)")
    p.add_argument("--checkpoint", help="weights.pt, runs:/ or models:/stcnn@ALIAS")
    p.add_argument("--davis-root")
    p.add_argument("--year", type=int, choices=[2016, 2017])
    p.add_argument("--split")
    p.add_argument("--youtube-objects-root")
    p.add_argument("--categories", nargs="+", help="YouTube-Objects classes (default: all)")
    p.add_argument("--sequences", nargs="+", help="DAVIS sequences or YouTube-Objects shots "
                                                  "(<class>/<video>/<shot>)")
    p.add_argument("--video")
    p.add_argument("--frames")
    p.add_argument("--first-mask")
    p.add_argument("--out")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. online.iterations=50")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_intermixed_args(argv)
    over = list(a.overrides)
    for key, value in (("checkpoint", a.checkpoint), ("davis_root", a.davis_root),
                       ("youtube_objects_root", a.youtube_objects_root),
                       ("year", a.year), ("split", a.split), ("video", a.video),
                       ("frames", a.frames), ("first_mask", a.first_mask), ("out", a.out)):
        if value is not None:
            over.append(f"{key}={value}")
    if a.sequences:
        over.append("sequences=[" + ",".join(a.sequences) + "]")
    if a.categories:
        over.append("categories=[" + ",".join(a.categories) + "]")
    try:
        cfg = load_config(SegmentConfig, a.config, over)
        run_segment(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
