#!/usr/bin/env python
"""Send tracking calls spooled during an MLflow outage (``<run_dir>/tracking_spool.jsonl``).

    python launch/tracking_sync.py RUN_DIR [RUN_DIR ...] [--tracking-uri http://mlflow:5000]

A training whose tracking store was unreachable keeps every metric, param, artifact, model and
registration it could not send in its run folder (pipeline/tracking.py). A tracker that sees the
store come back replays by itself; this command sends what was left when the training ended. The
store is ``--tracking-uri``, else the one recorded in ``RUN_DIR/tracking.json``, else
``$MLFLOW_TRACKING_URI``. Entries the store refuses are moved to ``tracking_rejected.jsonl``.
Exit status: 0 when every spool was emptied, 1 when a store was still unreachable (what was not
sent stays spooled; run it again later).
"""

import sys

from pipeline.cli.tracking_sync import main

if __name__ == "__main__":
    sys.exit(main())
