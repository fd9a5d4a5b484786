#!/usr/bin/env python
"""Summarise a data lake, validate its shards, or rebuild a set's catalog.parquet.

    python launch/catalog.py shards/                 # table of datasets, splits, samples, bytes
    python launch/catalog.py shards/ --validate      # every shard readable and checksummed
    python launch/catalog.py shards/davis2016/train --rebuild
    python launch/catalog.py s3://bucket/lake --validate   # a lake on object storage (copied to
                                                          # a temporary folder first; tars only
                                                          # for --validate)
"""

import sys

from pipeline.cli.catalog import main

if __name__ == "__main__":
    sys.exit(main())
