"""Tuning and segmenting sequence jobs over ranks (balanced by frame count): results, per-frame
timings, overlays and lucid-dream examples in the MLflow run.

Sequences already complete in ``out`` (:mod:`~pipeline.jobs.segment.resume`: a completion marker
written after the last PNG, for the same settings and weights) are skipped and counted in the
summary (``skipped``), unless ``redo=true``; a progress bar follows each sequence's tuning steps
and frames (:mod:`~pipeline.jobs.segment.progress`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.core.atomic import atomic_write_text
from pipeline.core.config import ConfigError
from pipeline.core.dist import barrier, DistContext
from pipeline.jobs.segment.config import SegmentConfig
from pipeline.jobs.segment.evaluate import evaluate_results, evaluate_youtube_objects_results
from pipeline.jobs.segment.inputs import read_rgb, davis_jobs, SequenceJob, youtube_objects_jobs
from pipeline.jobs.segment import resume
from pipeline.jobs.segment.progress import progress_enabled, SequenceProgress
from pipeline.inference.segmenter import OnlineSegmenter
from pipeline.inference.video import read_frames_dir, read_video, write_overlay_video, write_sequence_masks
from pipeline.inference.masks import object_ids, read_mask_png
from pipeline.train.lucid import save_example_grid


def assign_sequences(lengths: dict[str, int], world_size: int) -> list[list[str]]:
    """Sequences per rank, balanced by frame count (longest first to the least loaded rank)."""
    load = [0] * world_size
    out: list[list[str]] = [[] for _ in range(world_size)]
    for name in sorted(lengths, key=lambda n: (-lengths[n], n)):
        r = min(range(world_size), key=lambda i: (load[i], i))
        out[r].append(name)
        load[r] += lengths[name]
    return [sorted(names) for names in out]


def _gather(obj, ctx: DistContext) -> list:
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def run_sequences(cfg: SegmentConfig, jobs: dict[str, SequenceJob], segmenter: OnlineSegmenter,
                  ctx: DistContext, tracker, evaluate: Callable[[], dict] | None) -> dict:
    """Segment ``jobs`` not yet complete in ``out`` spread over the ranks (balanced by frame
    count), each rank writing its own ``<out>/<name>/<id>.png`` and then the sequence's
    completion marker; then, on rank 0: timings, ``evaluate()``, overlays."""
    out = Path(cfg.out)
    fingerprint = resume.job_fingerprint(cfg, {"G": segmenter.g, "SSB": segmenter.ssb})
    done = [] if cfg.redo else sorted(
        n for n, j in jobs.items() if resume.is_complete(out, n, j.ids, fingerprint))
    barrier(ctx)                         # every rank has looked before any rank writes
    if done and ctx.is_main:
        print(f"[segment] {len(done)} of {len(jobs)} sequences already complete in {out}: "
              f"skipped (redo=true segments them again)", flush=True)
    todo = {n: len(j.frames) for n, j in jobs.items() if n not in done}
    mine = assign_sequences(todo, ctx.world_size)[ctx.rank] if todo else []
    show = progress_enabled(cfg.progress, ctx.is_main)
    timings = {}
    if ctx.is_main:                      # the finished sequences' timings, as first measured
        for name in done:
            timings[name] = (resume.read_marker(out, name) or {}).get("timing", {})
    for name in mine:
        job = jobs[name]
        resume.start_sequence(out, name)
        frames = [read_rgb(p) for p in job.frames]
        first = job.first_mask()
        tune_steps = len(object_ids(first)) * cfg.online.iterations
        with SequenceProgress(name, tune_steps, len(frames) - 1, show) as bar:
            result = segmenter.segment(name, frames, first, progress=bar)
        write_sequence_masks(out / name, job.ids, result.masks)
        for step, r in result.at_steps.items():        # online.segment_at, before the marker
            write_sequence_masks(step_dir(out, step) / name, job.ids, r.masks)
        timings[name] = result.timing() | {"loss_first": float(np.mean([c[0] for c in result.losses.values()])),
                                           "loss_last": float(np.mean([c[-1] for c in result.losses.values()])),
                                           "rank": ctx.rank}
        resume.finish_sequence(out, name, job.ids, fingerprint, timings[name])
        print(f"[segment] rank {ctx.rank}: {name} ({result.frames} frames, "
              f"{len(result.objects)} object(s)) tune {timings[name]['tune_s_per_frame']:.2f} "
              f"s/frame, infer {timings[name]['infer_s_per_frame']:.3f} s/frame", flush=True)
    all_timings: dict = {}
    for part in _gather(timings, ctx):
        all_timings.update(part)
    summary: dict = {"sequences": len(jobs), "segmented": len(jobs) - len(done),
                     "skipped": done, "world_size": ctx.world_size, "out": str(out)}
    if not ctx.is_main:
        return summary
    measured = [t for t in all_timings.values() if "frames" in t]
    n = sum(t["frames"] - 1 for t in measured) or 1
    summary["timing"] = {
        "tune_s_per_frame": sum(t["tune_s"] for t in measured) / n,
        "infer_s_per_frame": sum(t["infer_s"] for t in measured) / n}
    summary["timing"]["total_s_per_frame"] = sum(summary["timing"].values())
    steps = {str(k): _overall([t["at_steps"][str(k)] | {"frames": t["frames"]} for t in measured])
             for k in cfg.online.segment_at}
    timing_doc = {"overall": summary["timing"], "sequences": all_timings}
    if steps:
        timing_doc["at_steps"] = steps
    atomic_write_text(out / "timing.json", json.dumps(timing_doc, indent=2, sort_keys=True))
    tracker.log_metrics({f"time/{k}": v for k, v in summary["timing"].items()}, step=0)
    tracker.log_artifact(out / "timing.json")
    if evaluate is not None:
        summary["evaluation"] = evaluate(out)
    if cfg.online.segment_at:
        summary["iterations"] = segment_at_summary(cfg, out, steps, summary, evaluate, tracker)
    for name in sorted(jobs)[: cfg.overlays]:
        _log_overlay(jobs[name], out / name,
                     out / "overlays" / f"{name.replace('/', '_')}.gif", tracker)
    if cfg.online.augment == "lucid":
        _log_dream_examples(cfg, jobs[sorted(jobs)[0]], tracker)
    return summary


def step_dir(out: Path, step: int) -> Path:
    """Where the results of the SSB after ``step`` tuning steps go (``online.segment_at``)."""
    return out / "iterations" / str(step)


def _overall(timings: list[dict]) -> dict[str, float]:
    n = sum(t["frames"] - 1 for t in timings) or 1
    tune, infer = sum(t["tune_s"] for t in timings) / n, sum(t["infer_s"] for t in timings) / n
    return {"tune_s_per_frame": tune, "infer_s_per_frame": infer, "total_s_per_frame": tune + infer}


def segment_at_summary(cfg: SegmentConfig, out: Path, steps: dict[str, dict], summary: dict,
                       evaluate: Callable[[Path], dict] | None, tracker) -> dict:
    """Per tuning step of ``online.segment_at`` and the final one: the timing, and with
    ``evaluate`` the scores of ``<out>/iterations/<step>/`` (metrics ``eval_at/<step>/...``)."""
    result = {str(cfg.online.iterations): {"timing": summary["timing"]}}
    if "evaluation" in summary:
        result[str(cfg.online.iterations)]["metrics"] = summary["evaluation"]["metrics"]
    for k, timing in steps.items():
        result[k] = {"timing": timing}
        if evaluate is not None:
            ev = evaluate(step_dir(out, int(k)), log=False)
            result[k]["metrics"] = ev["metrics"]
            tracker.log_metrics({f"eval_at/{k}/{m}": v for m, v in ev["metrics"].items()
                                 if v == v}, step=0)
    return dict(sorted(result.items(), key=lambda kv: int(kv[0])))


def run_davis(cfg: SegmentConfig, segmenter: OnlineSegmenter, ctx: DistContext, tracker) -> dict:
    return run_sequences(cfg, davis_jobs(cfg), segmenter, ctx, tracker,
                         (lambda where, log=True: evaluate_results(cfg, where, tracker, log))
                         if cfg.evaluate else None)


def run_youtube_objects(cfg: SegmentConfig, segmenter: OnlineSegmenter, ctx: DistContext,
                        tracker) -> dict:
    """Segment the labelled shots; ``data_events`` counts the shots left out (no label shows
    the object)."""
    left_out: list[str] = []
    summary = run_sequences(cfg, youtube_objects_jobs(cfg, left_out), segmenter, ctx, tracker,
                            (lambda where, log=True: evaluate_youtube_objects_results(
                                cfg, where, tracker, log)) if cfg.evaluate else None)
    summary["data_events"] = {"shots_left_out": len(left_out)}
    return summary


def _log_overlay(job: SequenceJob, result_dir: Path, path: Path, tracker) -> None:
    frames = [read_rgb(p) for p in job.frames]
    masks = [read_mask_png(result_dir / f"{i}.png") for i in job.ids]
    write_overlay_video(path, frames, masks, fps=8)
    tracker.log_artifact(path, "overlays")


def _log_dream_examples(cfg: SegmentConfig, job: SequenceJob, tracker) -> None:
    """The lucid-dream examples of the first sequence, as a PNG grid in the run."""
    path = Path(cfg.out) / "lucid_dream_examples.png"
    save_example_grid(path, read_rgb(job.frames[0]), job.first_mask(), n=8,
                      seed=cfg.online.seed, cfg=cfg.online.lucid)
    tracker.log_artifact(path, "lucid_dream")


def run_video(cfg: SegmentConfig, segmenter: OnlineSegmenter, tracker) -> dict:
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
    tracker.log_metrics({f"time/{k}": float(v) for k, v in timing.items()
                         if isinstance(v, (int, float))}, step=0)
    tracker.log_artifact(overlay, "overlays")
    print(f"[segment] {name}: {result.frames} frames -> {out / 'masks'}, overlay {overlay}; "
          f"tune {timing['tune_s_per_frame']:.2f} s/frame, infer "
          f"{timing['infer_s_per_frame']:.3f} s/frame", flush=True)
    return {"masks": str(out / "masks"), "overlay": str(overlay), "timing": timing}
