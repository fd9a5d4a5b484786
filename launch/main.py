#!/usr/bin/env python
"""The main job end to end on its embedded default (see pipeline/jobs/main.py).

    python launch/main.py                                  # configs/main.yaml
    python launch/main.py --config my.yaml lake.workers=4 sample_data.size=[854,480]
"""

import sys

from pipeline.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
