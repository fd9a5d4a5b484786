"""The whole pipeline end to end on its embedded default (see pipeline/jobs/demo.py):
generated data -> shards -> GAN pretraining -> SSB pretraining -> alternating training ->
online tuning + segmentation -> evaluation, tracked in a local MLflow store.

    python launch/demo.py                                   # configs/demo.yaml
    python launch/demo.py out=/tmp/demo steps.gan=100 segment.iterations=200
"""

from __future__ import annotations

from pipeline.cli.job_config import job_config
from pipeline.core.config import CONFIGS
from pipeline.jobs.demo import DemoConfig, run_demo

DEFAULT = CONFIGS / "demo.yaml"


def main(argv=None) -> int:
    cfg = job_config(DemoConfig, DEFAULT, __doc__, "steps.gan=100", "demo", argv,
                     "%(levelname)s %(name)s: %(message)s")
    if cfg is None:
        return 2
    run_demo(cfg)
    return 0
