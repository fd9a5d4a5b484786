"""Send tracking calls spooled during an MLflow outage (``<run_dir>/tracking_spool.jsonl``).

    python launch/tracking_sync.py RUN_DIR [RUN_DIR ...] [--tracking-uri http://mlflow:5000]

A training whose tracking store was unreachable keeps every metric, param, artifact, model and
registration it could not send in its run folder (pipeline/tracking/). A tracker that sees the
store come back replays by itself; this command sends what was left when the training ended. The
store is ``--tracking-uri``, else the one recorded in ``RUN_DIR/tracking.json``, else
``$MLFLOW_TRACKING_URI``. Entries the store refuses are moved to ``tracking_rejected.jsonl``.
Exit status: 0 when every spool was emptied, 1 when a store was still unreachable (what was not
sent stays spooled; run it again later), 2 when a run folder does not exist (nothing is sent) or
has no store to send to.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.cli import common
from pipeline.core.errors import PipelineError
from pipeline.tracking import (SPOOL_FILENAME, TrackingUnavailableError, configure_http,
                               read_spool, replay_spool)


NAME = "stcnn-tracking-sync"


@common.command(NAME, log_level="INFO")
def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folder holding tracking_spool.jsonl")
    p.add_argument("--tracking-uri", help="store to send to (default: the run's own)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    args = p.parse_args(argv)
    missing = [str(d) for d in args.run_dirs if not d.is_dir()]
    if missing:
        raise PipelineError(f"run folder(s) {', '.join(missing)} do not exist",
                            "pass the run_dir of the training (the folder holding "
                            "tracking_spool.jsonl)")
    configure_http(args.timeout, max_retries=2)
    status = 0
    for run_dir in args.run_dirs:
        if not (run_dir / SPOOL_FILENAME).is_file():
            print(f"{run_dir}: nothing spooled")
            continue
        total = len(read_spool(run_dir))
        try:
            sent = replay_spool(run_dir, args.tracking_uri)
        except TrackingUnavailableError as e:
            print(f"{run_dir}: sent {e.sent} of {total} spooled entries; {e}", file=sys.stderr)
            status = max(status, 1)
            continue
        except PipelineError as e:      # this folder's; the others are still sent
            status = max(status, common.fail(NAME, e))
            continue
        print(f"{run_dir}: sent {sent} of {total} spooled entries"
              + (f" ({total - sent} refused, see tracking_rejected.jsonl)" if sent < total else ""))
    return status
