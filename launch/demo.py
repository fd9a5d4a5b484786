#!/usr/bin/env python
"""The whole pipeline end to end on its embedded default (see pipeline/jobs/demo.py):

The same as ``stcnn-demo``; usage and options: ``python launch/demo.py --help`` (pipeline/cli/demo.py).
"""

import sys

from pipeline.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
