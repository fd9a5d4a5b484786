#!/usr/bin/env python
"""Online first-frame tuning (lucid dreaming) + segmentation, then evaluation.

    python launch/segment.py --checkpoint models:/stcnn@candidate --davis-root /data/DAVIS \
        --year 2016 --split val --out runs/results                 # + J/F/T in runs/results/eval
    torchrun --nproc_per_node=8 launch/segment.py ...               # sequences spread over ranks
    python launch/segment.py --checkpoint runs/train_offline/weights.pt \
        --video clip.mp4 --first-mask mask.png --out runs/my_video  # masks + overlay.gif
    python launch/segment.py ... --frames DIR --first-mask mask.png --out DIR
    python launch/segment.py ... online.iterations=100 online.size=[240,427]   # any config key

Config: pipeline/jobs/segment/config.py (SegmentConfig) and pipeline/inference/tuning.py
(OnlineConfig).
"""

import sys

from pipeline.cli.segment import main

if __name__ == "__main__":
    sys.exit(main())
