"""The whole pipeline end to end on its embedded default (see pipeline/jobs/demo.py):
generated data -> shards -> GAN pretraining -> SSB pretraining -> alternating training ->
online tuning + segmentation -> evaluation, tracked in a local MLflow store.

    python launch/demo.py                                   # configs/demo.yaml
    python launch/demo.py out=/tmp/demo steps.gan=100 segment.iterations=200
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.core.config import CONFIGS, ConfigError, dump_yaml, load_config
from pipeline.jobs.demo import DemoConfig, run_demo

DEFAULT = CONFIGS / "demo.yaml"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT)
    p.add_argument("overrides", nargs="*", help="key=value, e.g. steps.gan=100")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(DemoConfig, a.config, a.overrides)
    except ConfigError as e:
        print(f"demo: bad config: {e}", file=sys.stderr)
        return 2
    print("resolved config:\n" + dump_yaml(cfg))
    run_demo(cfg)
    return 0
