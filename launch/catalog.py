#!/usr/bin/env python
"""Summarise a data lake, validate its shards, or rebuild a set's catalog.parquet.

The same as ``stcnn-catalog``; usage and options: ``python launch/catalog.py --help`` (pipeline/cli/catalog.py).
"""

import sys

from pipeline.cli.catalog import main

if __name__ == "__main__":
    sys.exit(main())
