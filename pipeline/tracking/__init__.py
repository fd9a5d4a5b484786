"""MLflow tracking for the training phases (docs/architecture.md, "Tracking").

    tracker = Tracker(cfg.tracking, phase="pretrain_tcb", run_dir=run_dir, rank=rank,
                      default_store=run_root)
    with tracker:                                   # ends FAILED on an exception
        tracker.start(to_dict(cfg), tags=environment_info(world_size, device))
        for step in ...:
            tracker.log_metrics({"loss/g": g, "throughput/samples_per_s": sps}, step)
        tracker.log_checkpoint(ckpt_dir, step)
        uri = tracker.log_model(run_dir / WEIGHTS_FILENAME, model_config={...})
        tracker.register(uri)                       # cfg.register_as, alias cfg.alias

    weights = resolve_init("models:/stcnn-tcb@candidate",   # or runs:/..., or a local path
                           tracking_uri=store_for(run_dir, cfg.tracking.tracking_uri))

Rules:

* Only rank 0 logs; on other ranks (and with ``enabled: false``) every method is a no-op and
  nothing is written.
* One run per phase. A pipeline driver that chains phases opens its own run and exports
  :meth:`Tracker.child_env` (``STCNN_PARENT_RUN_ID``, ``MLFLOW_TRACKING_URI``) to the phases,
  whose runs are then nested under it (tag ``mlflow.parentRunId``).
* ``<run_dir>/tracking.json`` keeps the run id: a resumed training reopens the same run.
* Store: ``tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded sqlite store
  ``sqlite:///<default_store>/mlflow.db`` (artifacts in ``<default_store>/mlartifacts``). A run's
  ``models:/`` and ``runs:/`` URIs resolve in the same store: :func:`store_for` (``run_dir``'s
  parent being the default store), used by training, segmentation and the demo.
* :func:`ui_hint`: the ``mlflow ui`` command for a store and the link that opens an experiment's
  training runs in it, as the jobs print it.
* Everything goes through one :class:`mlflow.MlflowClient` bound to that URI (no fluent
  ``mlflow.start_run`` global state), so several trackers can live in one process.

Outages: a tracking call that fails because the store cannot be reached never raises into
training. The tracker logs one warning naming the URI and the spool file, appends the call to
``<run_dir>/tracking_spool.jsonl`` (JSON lines: ``kind, run_id, payload, step, timestamp``) and
from then on spools without trying, except for one cheap probe every ``retry_interval_s``; when the
store answers again it replays the spool (same steps and timestamps) and goes on live. Whatever is
still spooled when training ends is sent later by :func:`replay_spool`
(``python launch/tracking_sync.py RUN_DIR``). HTTP calls are bounded by
``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (set from the config, see
:func:`configure_http`): MLflow's defaults (120 s timeout, 7 retries with exponential backoff)
would stall a step for minutes. A call the store *refuses* (an invalid or changed value, an
artifact file gone, ...: resending cannot help) is not an outage: it is written to
``<run_dir>/tracking_rejected.jsonl`` with the error and a warning, never silently dropped.

System metrics (CPU, memory, disk, network, GPU when pynvml is present) are sampled by MLflow's
own monitors every ``system_metrics_interval_s`` on a daemon thread and logged as ``system/*``
through the same buffered, spooled path. (``mlflow.start_run(log_system_metrics=True)`` is not
used: its monitor thread stops for good at the first failed request and drops its samples.)

The modules, one job each: :mod:`~pipeline.tracking.config` (the config, limits, store URIs),
:mod:`~pipeline.tracking.tracker` (the tracker), :mod:`~pipeline.tracking.send` (the one switch
that sends an entry), :mod:`~pipeline.tracking.spool` (spool and replay),
:mod:`~pipeline.tracking.outage` (outage or rejection), :mod:`~pipeline.tracking.registry`
(logged models, registration), :mod:`~pipeline.tracking.init` (``init_from`` URIs),
:mod:`~pipeline.tracking.system` (system metrics), :mod:`~pipeline.tracking.redact` (secrets,
params), :mod:`~pipeline.tracking.info` (git and environment tags), :mod:`~pipeline.tracking.ui`
(the UI command and link).
"""

from pipeline.tracking.config import (PARAM_VALUE_MAX, PARENT_RUN_ENV, REJECTED_FILENAME,
                                      SPOOL_FILENAME, STATE_FILENAME, TRUNCATED_MARKER,
                                      WEIGHTS_FILENAME, TrackingConfig, configure_http,
                                      embedded_uri, resolve_tracking_uri, store_for,
                                      validate_alias)
from pipeline.tracking.info import environment_info, git_info
from pipeline.tracking.init import resolve_init
from pipeline.tracking.outage import TrackingUnavailableError
from pipeline.tracking.redact import REDACTED, flatten_params, redact, redact_tree
from pipeline.tracking.spool import read_spool, replay_spool
from pipeline.tracking.tracker import Tracker
from pipeline.tracking.ui import ui_hint

__all__ = [
    "PARAM_VALUE_MAX", "PARENT_RUN_ENV", "REDACTED", "REJECTED_FILENAME", "SPOOL_FILENAME",
    "STATE_FILENAME", "TRUNCATED_MARKER", "WEIGHTS_FILENAME", "Tracker", "TrackingConfig",
    "TrackingUnavailableError", "configure_http", "embedded_uri", "environment_info",
    "flatten_params", "git_info", "read_spool", "redact", "redact_tree", "replay_spool",
    "resolve_init", "resolve_tracking_uri", "store_for", "ui_hint", "validate_alias",
]
