#!/usr/bin/env python
"""The main job end to end on its embedded default (see pipeline/jobs/main.py).

The same as ``stcnn-main``; usage and options: ``python launch/main.py --help`` (pipeline/cli/main.py).
"""

import sys

from pipeline.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
