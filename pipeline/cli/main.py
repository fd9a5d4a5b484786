"""The main job end to end on its embedded default (see pipeline/jobs/main.py).

    python launch/main.py                                  # configs/main.yaml
    python launch/main.py --config my.yaml lake.workers=4 sample_data.size=[854,480]
"""

from __future__ import annotations

import sys

from pipeline.cli.job_config import job_config
from pipeline.core.config import CONFIGS
from pipeline.jobs.main import MainConfig, run_main
from pipeline.sources.types import SourceError

DEFAULT = CONFIGS / "main.yaml"


def main(argv=None) -> int:
    cfg = job_config(MainConfig, DEFAULT, __doc__, "lake.workers=4", "main", argv)
    if cfg is None:
        return 2
    try:
        report = run_main(cfg)
    except (SourceError, ValueError, FileNotFoundError) as e:
        print(f"main: error: {e}", file=sys.stderr)
        return 2
    return 0 if report["ok"] else 1
