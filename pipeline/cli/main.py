"""The main job end to end on its embedded default (see pipeline/jobs/main.py).

    python launch/main.py                                  # configs/main.yaml
    python launch/main.py --config my.yaml lake.workers=4 sample_data.size=[854,480]
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import common
from pipeline.cli.job_config import FIX, job_config
from pipeline.jobs.main import MainConfig, run_main

DEFAULT = Path("configs/main.yaml")  # found by pipeline.core.config.find_config


@common.command("stcnn-main", fix=FIX)
def main(argv=None) -> int:
    cfg = job_config(MainConfig, DEFAULT, __doc__, "lake.workers=4", "stcnn-main", argv)
    report = run_main(cfg)
    return 0 if report["ok"] else 1
