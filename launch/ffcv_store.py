#!/usr/bin/env python
"""Write an FFCV store (.beton) of image shard sets, for SSB pretraining with data.backend=ffcv.

The same as ``stcnn-ffcv-store``; usage and options: ``python launch/ffcv_store.py --help`` (pipeline/cli/ffcv_store.py).
"""

import sys

from pipeline.cli.ffcv_store import main

if __name__ == "__main__":
    sys.exit(main())
