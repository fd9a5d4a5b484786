#!/usr/bin/env python
"""Score segmentation results with the official DAVIS protocol, or on YouTube-Objects.

The same as ``stcnn-evaluate``; usage and options: ``python launch/evaluate.py --help`` (pipeline/cli/evaluate.py).
"""

import sys

from pipeline.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
