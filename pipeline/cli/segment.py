"""``launch/segment.py`` / ``stcnn-segment``: flags for the inputs, ``key=value`` for any config
key (``--print-config`` lists them).

    stcnn-segment --checkpoint models:/stcnn@candidate --davis-root DAVIS --year 2016 \
        --split val --out runs/davis16_val
    stcnn-segment --checkpoint weights.pt --video clip.mp4 --first-mask mask.png --out runs/v
    stcnn-segment --print-config online.iterations=100        # the resolved config, valid keys
"""

from __future__ import annotations

import argparse

from pipeline.cli import common
from pipeline.core.config import config_text, load_config
from pipeline.jobs.segment import run_segment
from pipeline.jobs.segment.config import SegmentConfig

NAME = "stcnn-segment"
FIX = f"correct the flag or setting it names (`{NAME} --print-config` shows the resolved config)"


@common.command(NAME, fix=FIX)
def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument("--config", default=None,
                   help="a YAML file of SegmentConfig keys (default: none, the built-in defaults)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML) and its valid keys, write nothing")
    p.add_argument("--checkpoint", help="weights.pt, runs:/ or models:/stcnn@ALIAS")
    p.add_argument("--davis-root", help="DAVIS root (JPEGImages/, Annotations/, ImageSets/)")
    p.add_argument("--year", type=int, choices=[2016, 2017], help="DAVIS version (default: 2016)")
    p.add_argument("--split", help="DAVIS split (default: val)")
    p.add_argument("--youtube-objects-root", help="YouTube-Objects root (v1/ and youtube_masks/)")
    p.add_argument("--categories", nargs="+", help="YouTube-Objects classes (default: all)")
    p.add_argument("--sequences", nargs="+", help="DAVIS sequences or YouTube-Objects shots "
                                                  "(<class>/<video>/<shot>) (default: all)")
    p.add_argument("--video", help="a video file of your own to segment")
    p.add_argument("--frames", help="a folder of frames of your own to segment")
    p.add_argument("--first-mask", help="with --video/--frames: the first frame's mask (PNG of "
                                        "object ids)")
    p.add_argument("--out", help="the results folder (default: runs/segment)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override any config key, e.g. online.iterations=50")
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
    cfg = load_config(SegmentConfig, a.config, over)
    if a.print_config:
        print(config_text(cfg, NAME), end="")
        return 0
    run_segment(cfg)
    return 0
