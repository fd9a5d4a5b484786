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

Resumable (DAVIS, YouTube-Objects): re-running the same command skips the sequences already
complete in ``<out>`` (a completion marker written after a sequence's last PNG, for the same
settings and weights: :mod:`~pipeline.jobs.segment.resume` states the rule) and counts them in
the printed line and ``summary.json`` (``skipped``); ``redo=true`` segments everything again.
On rank 0 a progress bar follows each sequence's tuning steps and frames when stderr is a
terminal (``progress=true``/``false`` to force it on or off).

MLflow (rank 0): a run ``segment`` (nested under ``$STCNN_PARENT_RUN_ID``) with the config, the
per-frame timings, J/F/T, the CSV tables, the per-sequence bar plot, overlays of a few sequences
and the lucid-dream examples of the first one.

The modules: :mod:`~pipeline.jobs.segment.config`, :mod:`~pipeline.jobs.segment.inputs`,
:mod:`~pipeline.jobs.segment.run`, :mod:`~pipeline.jobs.segment.evaluate`,
:mod:`~pipeline.jobs.segment.resume`, :mod:`~pipeline.jobs.segment.progress`; the command line is
:mod:`pipeline.cli.segment`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pipeline.core.atomic import atomic_write_text
from pipeline.core.config import ConfigError, from_dict, to_dict
from pipeline.core.dist import barrier, init_distributed
from pipeline.core.logs import report_events
from pipeline.jobs.segment.config import SegmentConfig, load_checkpoint_weights
from pipeline.jobs.segment.run import run_davis, run_video, run_youtube_objects
from pipeline.model.config import ModelConfig
from pipeline.tracking import environment_info, git_info, Tracker
from pipeline.inference.segmenter import OnlineSegmenter
from pipeline.core.dist import destroy

log = logging.getLogger(__name__)


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
        weights, stored = load_checkpoint_weights(cfg)
        model_cfg = from_dict(ModelConfig, stored, cfg.model_overrides, where=cfg.checkpoint)
        if cfg.dist.compile and ctx.is_main:
            log.warning("dist.compile is not applied to online tuning (each sequence and object "
                        "tunes a fresh SSB copy, which would be recompiled every time); "
                        "dist.precision and dist.channels_last do apply")
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
            summary["data_events"] = report_events(log, "segment",
                                                   summary.get("data_events", {}))
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
        tracker.end("FINISHED")
        barrier(ctx)
        return summary
    finally:
        destroy()


__all__ = ["SegmentConfig", "run_segment"]
