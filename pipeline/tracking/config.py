"""The ``tracking:`` config, MLflow's limits, the files a run folder keeps, and which store a
run talks to (URI resolution, HTTP bounds, the client)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow

from pipeline.core.config import ConfigError


WEIGHTS_FILENAME = "weights.pt"
STATE_FILENAME = "tracking.json"
SPOOL_FILENAME = "tracking_spool.jsonl"
REJECTED_FILENAME = "tracking_rejected.jsonl"
PARENT_RUN_ENV = "STCNN_PARENT_RUN_ID"
EMBEDDED_DB_NAME = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlartifacts"

# MLflow's limits per log_batch call, and a param value length every server accepts (MLflow 3.17
# takes 6000 characters, older servers 500). The full config is also logged as config.json.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
PARAM_VALUE_MAX = 500
TRUNCATED_MARKER = "...[truncated]"

_ALIAS_RE = re.compile(r"^[\w\-]+$")
_RESERVED_ALIAS_VERSION_RE = re.compile(r"^[vV]\d+$")

# MlflowException error codes that mean "the store answered and refused this call": retrying the
# same call later cannot help, so it is set aside (REJECTED_FILENAME) instead of spooled.
REJECTION_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
    "ALREADY_EXISTS", "NOT_FOUND", "BAD_REQUEST", "INVALID_STATE", "INVALID_REQUEST",
    "MALFORMED_REQUEST", "ENDPOINT_NOT_FOUND",
})


@dataclass
class TrackingConfig:
    """``tracking:`` in the training configs."""

    enabled: bool = True
    # None: $MLFLOW_TRACKING_URI, else the embedded sqlite:///<default_store>/mlflow.db
    tracking_uri: str | None = None
    experiment: str = "stcnn"
    run_name: str | None = None          # default: the phase name
    # None: $STCNN_PARENT_RUN_ID when set (a pipeline run), else a top-level run
    parent_run_id: str | None = None
    register_as: str | None = None       # e.g. "stcnn-tcb"; None: do not register
    alias: str = "candidate"             # set on the registered version
    log_every: int = 1                   # log_metrics calls buffered per log_batch
    # metrics handed to MLflow's async logging queue (off the training thread); failures are
    # reaped into the spool like those of synchronous calls (pipeline/tracking/inflight.py)
    async_metrics: bool = True
    system_metrics: bool = True
    system_metrics_interval_s: float = 10.0
    request_timeout_s: float = 5.0       # per HTTP request (connect and read)
    request_max_retries: int = 0         # HTTP retries per request (the spool is the real retry)
    retry_interval_s: float = 30.0       # during an outage: seconds between reconnection probes
    # the store still down when the run ends: keep trying this long (probes 1 s apart) before
    # leaving the spool to `launch/tracking_sync.py`
    final_retry_s: float = 10.0

    def __post_init__(self) -> None:
        validate_alias(self.alias)
        if self.log_every < 1:
            raise ConfigError(f"tracking.log_every: must be >= 1, got {self.log_every}")
        for key in ("request_timeout_s", "system_metrics_interval_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"tracking.{key}: must be > 0, got {getattr(self, key)}")
        if self.request_max_retries < 0 or self.retry_interval_s < 0 or self.final_retry_s < 0:
            raise ConfigError("tracking.request_max_retries, tracking.retry_interval_s and "
                              "tracking.final_retry_s must be >= 0")


def validate_alias(alias: str) -> str:
    """Reject alias names MLflow refuses or reserves (``latest``, ``v<N>``) before training
    starts, not at the end of it."""
    if not alias or not _ALIAS_RE.match(alias) or len(alias) > 255:
        raise ConfigError(f"tracking.alias: {alias!r} is not a valid MLflow alias (letters, "
                          "digits, '_' and '-', at most 255 characters)")
    if alias.lower() == "latest" or _RESERVED_ALIAS_VERSION_RE.match(alias):
        raise ConfigError(f"tracking.alias: {alias!r} is reserved by MLflow ('latest' and "
                          "'v<number>' name versions); pick another, e.g. 'candidate'")
    return alias


def configure_http(timeout_s: float, max_retries: int = 0) -> None:
    """Bound every MLflow HTTP request of this process: ``timeout_s`` per connect/read and
    ``max_retries`` immediate retries (backoff 0), so a dead or black-holed server costs at most
    ``(1 + max_retries) * timeout_s`` per call. MLflow reads these variables on each request."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(max_retries))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"
    # no progress bars in training logs (one per logged model otherwise)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def embedded_uri(store: str | Path) -> str:
    """The embedded store: ``sqlite:///<store>/mlflow.db`` (absolute path)."""
    return f"sqlite:///{Path(store).resolve().as_posix()}/{EMBEDDED_DB_NAME}"


def resolve_tracking_uri(uri: str | None, default_store: str | Path | None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded store in ``default_store``."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if default_store is None:
        raise ConfigError("no tracking URI: set tracking.tracking_uri or $MLFLOW_TRACKING_URI, "
                         "or give Tracker a default_store folder for the embedded sqlite store")
    return embedded_uri(default_store)


def store_for(run_dir: str | Path, tracking_uri: str | None = None) -> str:
    """The store of a run in ``run_dir``: the one its Tracker writes to by default and the one
    its ``models:/`` and ``runs:/`` URIs (``init_from``, ``--checkpoint``) resolve in.
    ``tracking_uri`` (``tracking.tracking_uri``), else ``$MLFLOW_TRACKING_URI``, else the embedded
    store beside the run, ``sqlite:///<run_dir's parent>/mlflow.db``."""
    return resolve_tracking_uri(tracking_uri, Path(run_dir).parent)


def make_client(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=uri,
                               registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` store (None for other stores, in-memory too)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


def sqlite_folder(uri: str) -> Path | None:
    """The folder of a ``sqlite:///...`` store (where its default artifact folder goes)."""
    db = sqlite_file(uri)
    return db.parent if db is not None else None
