"""``launch/segment.py`` / ``stcnn-segment``: flags for the inputs, ``key=value`` for any config key."""

from __future__ import annotations

import sys

from pipeline.core.config import ConfigError
from pipeline.jobs.segment import run_segment
from pipeline.jobs.segment.config import SegmentConfig
from pipeline.core.config import load_config


def main(argv: list[str] | None = None) -> int:
    import argparse


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
