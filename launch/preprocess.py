#!/usr/bin/env python
"""Turn an official dataset layout into WebDataset shards + a parquet catalog.

The same as ``stcnn-preprocess``; usage and options: ``python launch/preprocess.py --help`` (pipeline/cli/preprocess.py).
"""

import sys

from pipeline.cli.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
