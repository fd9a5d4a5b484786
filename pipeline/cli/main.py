"""The main job end to end on its embedded default (see pipeline/jobs/main.py).

    python launch/main.py                                  # configs/main.yaml
    python launch/main.py --config my.yaml lake.workers=4 sample_data.size=[854,480]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.core.config import CONFIGS, ConfigError, dump_yaml, load_config
from pipeline.sources.types import SourceError
from pipeline.jobs.main import MainConfig, run_main

DEFAULT = CONFIGS / "main.yaml"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT)
    p.add_argument("overrides", nargs="*", help="key=value, e.g. lake.workers=4")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        cfg = load_config(MainConfig, a.config, a.overrides)
    except ConfigError as e:
        print(f"main: bad config: {e}", file=sys.stderr)
        return 2
    print("resolved config:\n" + dump_yaml(cfg))
    try:
        report = run_main(cfg)
    except (SourceError, ValueError, FileNotFoundError) as e:
        print(f"main: error: {e}", file=sys.stderr)
        return 2
    return 0 if report["ok"] else 1
