"""The whole pipeline end to end on its embedded default (see pipeline/jobs/demo.py):
generated data -> shards -> GAN pretraining -> SSB pretraining -> alternating training ->
online tuning + segmentation -> evaluation, tracked in a local MLflow store.

    python launch/demo.py                                   # configs/demo.yaml
    python launch/demo.py out=/tmp/demo steps.gan=100 segment.iterations=200
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import common
from pipeline.cli.job_config import FIX, job_config
from pipeline.jobs.demo import DemoConfig, run_demo

DEFAULT = Path("configs/demo.yaml")  # found by pipeline.core.config.find_config


@common.command("stcnn-demo", fix=FIX)
def main(argv=None) -> int:
    cfg = job_config(DemoConfig, DEFAULT, __doc__, "steps.gan=100", "stcnn-demo", argv)
    run_demo(cfg)
    return 0
