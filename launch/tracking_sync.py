#!/usr/bin/env python
"""Send tracking calls spooled during an MLflow outage (``<run_dir>/tracking_spool.jsonl``).

The same as ``stcnn-tracking-sync``; usage and options: ``python launch/tracking_sync.py --help`` (pipeline/cli/tracking_sync.py).
"""

import sys

from pipeline.cli.tracking_sync import main

if __name__ == "__main__":
    sys.exit(main())
