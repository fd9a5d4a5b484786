"""MLflow tracking for the training phases (DESIGN.md section 5).

    tracker = Tracker(cfg.tracking, phase="pretrain_tcb", run_dir=run_dir, rank=rank,
                      default_store=run_root)
    with tracker:                                   # ends FAILED on an exception
        tracker.start(to_dict(cfg), tags=environment_info(world_size, device))
        for step in ...:
            tracker.log_metrics({"loss/g": g, "throughput/samples_per_s": sps}, step)
        tracker.log_checkpoint(ckpt_dir, step)
        uri = tracker.log_model(run_dir / WEIGHTS_FILENAME, model_config={...})
        tracker.register(uri)                       # cfg.register_as, alias cfg.alias

    weights = resolve_init("models:/stcnn-tcb@candidate")   # or runs:/..., or a local path

Rules:

* Only rank 0 logs; on other ranks (and with ``enabled: false``) every method is a no-op and
  nothing is written.
* One run per phase. A pipeline driver that chains phases opens its own run and exports
  :meth:`Tracker.child_env` (``STCNN_PARENT_RUN_ID``, ``MLFLOW_TRACKING_URI``) to the phases,
  whose runs are then nested under it (tag ``mlflow.parentRunId``).
* ``<run_dir>/tracking.json`` keeps the run id: a resumed training reopens the same run.
* Store: ``tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded sqlite store
  ``sqlite:///<default_store>/mlflow.db`` (artifacts in ``<default_store>/mlartifacts``).
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
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import mlflow
import mlflow.pyfunc
from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from pipeline.atomic import atomic_write_text
from pipeline.config import ConfigError

log = logging.getLogger(__name__)

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
_REJECTION_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
    "ALREADY_EXISTS", "NOT_FOUND", "BAD_REQUEST", "INVALID_STATE", "INVALID_REQUEST",
    "MALFORMED_REQUEST", "ENDPOINT_NOT_FOUND",
})


# ---------------------------------------------------------------------------------------------
# configuration


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
        raise ValueError("no tracking URI: set tracking.tracking_uri or $MLFLOW_TRACKING_URI, "
                         "or give Tracker a default_store folder for the embedded sqlite store")
    return embedded_uri(default_store)


def _client(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=uri,
                               registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _sqlite_folder(uri: str) -> Path | None:
    """The folder of a ``sqlite:///...`` store (where its default artifact folder goes)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):]
    return Path(path).resolve().parent if path and path != ":memory:" else None


# ---------------------------------------------------------------------------------------------
# params, tags, environment


_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|access[_-]?key|credential)",
                         re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
REDACTED = "***"


def redact(key: str, value: str) -> str:
    """No secrets in params, tags or logs: values of secret-looking keys become ``***`` and the
    ``user:password@`` part of URLs is removed."""
    if _SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return REDACTED
    return _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", value)


def redact_tree(d: Any, key: str = "") -> Any:
    """:func:`redact` applied to every leaf of a nested config (for ``config.json``)."""
    if isinstance(d, dict):
        return {k: redact_tree(v, str(k)) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [redact_tree(v, key) for v in d]
    if isinstance(d, str):
        return redact(key, d)
    if d is not None and _SECRET_KEY.search(key):
        return REDACTED
    return d


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """``{"optim": {"g": {"lr": 1e-4}}}`` -> ``{"optim.g.lr": "0.0001"}``; values stringified,
    secrets redacted (:func:`redact`) and cut to PARAM_VALUE_MAX characters (ending with
    TRUNCATED_MARKER)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, key + "."))
            continue
        text = redact(key, str(v))
        if len(text) > PARAM_VALUE_MAX:
            text = text[: PARAM_VALUE_MAX - len(TRUNCATED_MARKER)] + TRUNCATED_MARKER
        out[key] = text
    return out


def git_info(repo: str | Path | None = None) -> dict[str, str]:
    """``git.commit`` (``git rev-parse HEAD``) and ``git.dirty`` (tracked files modified) of
    ``repo`` (default: the checkout this package runs from); ``"unknown"`` outside git."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                               timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {"git.commit": commit, "git.dirty": dirty, "mlflow.source.git.commit": commit}


def environment_info(world_size: int = 1, device: Any = None) -> dict[str, str]:
    """Tags describing where a phase runs: torch/CUDA/cuDNN versions, device type, count and
    name, world size, Python, MLflow, host. ``device``: a ``torch.device``, a string such as
    ``"cuda"``/``"cpu"``, or None (CUDA when available)."""
    import torch

    dtype = getattr(device, "type", None) or (str(device).split(":")[0] if device else None)
    if dtype is None:
        dtype = "cuda" if torch.cuda.is_available() else "cpu"
    info = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "none",
        "cudnn_version": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available()
        else "none",
        "device_type": dtype,
        "device_count": "1",
        "device_name": platform.processor() or platform.machine(),
        "world_size": str(world_size),
        "python_version": platform.python_version(),
        "mlflow_version": mlflow.__version__,
        "hostname": socket.gethostname(),
    }
    if dtype == "cuda" and torch.cuda.is_available():
        info["device_count"] = str(torch.cuda.device_count())
        info["device_name"] = torch.cuda.get_device_name(0)
    elif dtype == "cpu":
        info["device_count"] = str(os.cpu_count() or 1)
    return info


# ---------------------------------------------------------------------------------------------
# errors and the spool


class TrackingUnavailableError(RuntimeError):
    """The tracking store could not be reached; ``sent`` entries went out before it failed."""

    def __init__(self, message: str, sent: int = 0):
        super().__init__(message)
        self.sent = sent


def _is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the store could not be reached or could not serve the call now
    (connection refused, timeout, 5xx, 429, database locked): the call is spooled and retried.
    Anything else is a rejection: the store refused this call (invalid or changed value, missing
    file, ...), and sending it again cannot help."""
    if isinstance(exc, MlflowException):
        return exc.error_code not in _REJECTION_CODES
    if isinstance(exc, FileNotFoundError):
        return False
    if isinstance(exc, OSError):              # includes requests' ConnectionError and Timeout
        return True
    try:
        import requests
        import sqlalchemy.exc
    except ImportError:  # pragma: no cover - both are MLflow dependencies
        return False
    return isinstance(exc, (requests.RequestException, sqlalchemy.exc.OperationalError))


def _is_rejection(exc: BaseException) -> bool:
    return not _is_outage(exc)


def _entry(kind: str, run_id: str | None, payload: Any, step: int | None = None,
           timestamp: int | None = None) -> dict:
    return {"kind": kind, "run_id": run_id, "payload": payload, "step": step,
            "timestamp": int(time.time() * 1000) if timestamp is None else timestamp}


def _append_jsonl(path: Path, entries: Iterable[dict]) -> None:
    text = "".join(json.dumps(e, default=str) + "\n" for e in entries)
    if text:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()


def read_spool(run_dir: str | Path) -> list[dict]:
    """The spooled entries of ``run_dir``, oldest first (a torn last line is skipped)."""
    path = Path(run_dir) / SPOOL_FILENAME
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d is not JSON (torn write?): skipped", path, n)
    return out


def _read_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILENAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s unreadable (%s): starting a new MLflow run", path, e)
        return {}


def _write_state(run_dir: Path, state: dict) -> None:
    atomic_write_text(run_dir / STATE_FILENAME, json.dumps(state, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# the logged model


# The logged model is "models from code": this script is stored in the model (no pickled
# class, nothing from this package needed to load it).
_WEIGHTS_MODEL_CODE = '''"""STCNN weights as an MLflow logged model: artifacts/weights.pt + config.

Only a carrier for the registry: load the weights with pipeline.tracking.resolve_init() and
build the network with the project's model code.
"""
import mlflow
from mlflow.pyfunc import PythonModel


class WeightsModel(PythonModel):
    def load_context(self, context):
        self.weights_path = context.artifacts.get("weights")
        self.config_path = context.artifacts.get("model_config")

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        """Returns the local path of the weights file (whatever the input)."""
        return [self.weights_path]


mlflow.models.set_model(WeightsModel())
'''


def _save_weights_model(dst: Path, weights_file: Path, model_config: dict | None,
                        mlflow_model: Any) -> None:
    import torch

    code = dst.parent / "weights_model.py"
    code.write_text(_WEIGHTS_MODEL_CODE, encoding="utf-8")
    artifacts = {"weights": str(weights_file)}
    if model_config is not None:
        cfg_path = dst.parent / "model_config.json"
        cfg_path.write_text(json.dumps(model_config, indent=2, default=str), encoding="utf-8")
        artifacts["model_config"] = str(cfg_path)
    # Explicit requirements: inferring them would load the model in a subprocess (slow).
    mlflow.pyfunc.save_model(
        path=str(dst), python_model=str(code), artifacts=artifacts,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                          f"mlflow=={mlflow.__version__}"],
        mlflow_model=mlflow_model, metadata={"weights_file": WEIGHTS_FILENAME})


def _log_weights_model(client: mlflow.MlflowClient, run_id: str, weights_file: str | Path,
                       name: str, model_config: dict | None, step: int = 0) -> str:
    """Log ``weights_file`` as an MLflow 3 logged model (pyfunc flavour) linked to ``run_id``;
    return its URI ``models:/<model_id>``. The file is stored as ``weights.pt`` whatever its
    local name."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    weights_file = Path(weights_file)
    if not weights_file.is_file():
        raise FileNotFoundError(f"log_model: weights file {weights_file} does not exist")
    run = client.get_run(run_id)
    model = client.create_logged_model(
        experiment_id=run.info.experiment_id, name=name, source_run_id=run_id,
        tags={"stcnn.weights_file": WEIGHTS_FILENAME})
    try:
        with tempfile.TemporaryDirectory(prefix="stcnn-model-") as tmp:
            staged = Path(tmp) / "stage" / WEIGHTS_FILENAME
            staged.parent.mkdir()
            try:
                os.link(weights_file, staged)          # no copy of a large file when possible
            except OSError:
                import shutil
                shutil.copyfile(weights_file, staged)
            mlflow_model = Model(artifact_path=model.artifact_location, model_uuid=model.model_id,
                                 run_id=run_id, model_id=model.model_id)
            local = Path(tmp) / "model"
            _save_weights_model(local, staged, model_config, mlflow_model)
            client.log_model_artifacts(model.model_id, str(local))
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    except BaseException:
        try:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        except Exception:  # noqa: BLE001 - the original error matters
            pass
        raise
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
    return f"models:/{model.model_id}"


def _register(client: mlflow.MlflowClient, model_uri: str, name: str, alias: str,
              run_id: str | None) -> int:
    """Register ``model_uri`` (``models:/<model_id>``) as a new version of ``name`` and point
    ``alias`` at it; return the version."""
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    source, model_id = model_uri, None
    if model_uri.startswith("models:/m-"):
        # A logged model: register its artifact location (a sqlite registry would otherwise look
        # the model id up through the process-global tracking URI, not this client's).
        model_id = model_uri[len("models:/"):]
        logged = client.get_logged_model(model_id)
        source, run_id = logged.artifact_location, run_id or logged.source_run_id
    mv = client.create_model_version(name=name, source=source, run_id=run_id,
                                     model_id=model_id)
    client.set_registered_model_alias(name, alias, mv.version)
    return int(mv.version)


# ---------------------------------------------------------------------------------------------
# sending entries (live and replay)


def _ensure_experiment(client: mlflow.MlflowClient, uri: str, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise MlflowException(
                f"MLflow experiment {name!r} is deleted in {uri}: restore it (mlflow experiments "
                "restore) or set tracking.experiment to another name",
                error_code="INVALID_STATE")
        return exp.experiment_id
    artifact_location = None
    folder = _sqlite_folder(uri)
    if folder is not None:   # not ./mlruns in whatever folder the job started from
        artifact_location = (folder / EMBEDDED_ARTIFACTS).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as e:   # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise e
        return exp.experiment_id


def _create_run(client: mlflow.MlflowClient, uri: str, spec: dict) -> str:
    exp_id = _ensure_experiment(client, uri, spec["experiment"])
    tags = dict(spec.get("tags") or {})
    tags["mlflow.runName"] = spec["run_name"]
    if spec.get("parent_run_id"):
        tags["mlflow.parentRunId"] = spec["parent_run_id"]
    run = client.create_run(exp_id, tags=tags, run_name=spec["run_name"],
                            start_time=spec.get("start_time"))
    return run.info.run_id


def _send_params(client: mlflow.MlflowClient, run_id: str, params: dict[str, str]) -> None:
    items = list(params.items())
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        chunk = items[i:i + MAX_PARAMS_PER_BATCH]
        client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])


def _send_tags(client: mlflow.MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    items = list(tags.items())
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        chunk = items[i:i + MAX_PARAMS_PER_BATCH]
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in chunk])


def _metric_objs(entries: list[dict]) -> list[Metric]:
    return [Metric(k, float(v), e["timestamp"], e["step"])
            for e in entries for k, v in e["payload"].items()]


def _send_metrics(client: mlflow.MlflowClient, run_id: str, entries: list[dict]) -> None:
    metrics = _metric_objs(entries)
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])


def _send_artifact(client: mlflow.MlflowClient, run_id: str, path: str,
                   artifact_path: str | None) -> None:
    p = Path(path)
    if p.is_dir():
        client.log_artifacts(run_id, str(p), artifact_path)
    elif p.is_file():
        client.log_artifact(run_id, str(p), artifact_path)
    else:
        raise FileNotFoundError(f"artifact {p} does not exist (any more)")


class _Replayer:
    """Sends spooled entries in order; stops at the first outage, sets rejected ones aside."""

    def __init__(self, run_dir: Path, client: mlflow.MlflowClient, uri: str):
        self.run_dir, self.client, self.uri = run_dir, client, uri
        self.state = _read_state(run_dir)
        self.last_model_uri: str | None = None
        self.sent = 0
        self.error: BaseException | None = None    # the outage that stopped the replay

    def _run_id(self, entry: dict) -> str:
        run_id = entry.get("run_id") or self.state.get("run_id")
        if not run_id:
            raise MlflowException("spooled entry before its run was created",
                                  error_code="INVALID_STATE")
        return run_id

    def send(self, group: list[dict]) -> None:
        """Send one entry, or several consecutive metrics entries of one run."""
        e = group[0]
        kind = e["kind"]
        if kind == "metrics":
            _send_metrics(self.client, self._run_id(e), group)
        elif kind == "start":
            if not self.state.get("run_id"):
                spec = dict(e["payload"], start_time=e["timestamp"])
                self.state["run_id"] = _create_run(self.client, self.uri, spec)
                self.state["tracking_uri"] = self.uri
                _write_state(self.run_dir, self.state)
        elif kind == "reopen":
            self.client.update_run(self._run_id(e), status="RUNNING")
        elif kind == "params":
            _send_params(self.client, self._run_id(e), e["payload"])
        elif kind == "tags":
            _send_tags(self.client, self._run_id(e), e["payload"])
        elif kind == "artifact":
            _send_artifact(self.client, self._run_id(e), e["payload"]["path"],
                           e["payload"].get("artifact_path"))
        elif kind == "dict":
            self.client.log_dict(self._run_id(e), e["payload"]["data"], e["payload"]["file"])
        elif kind == "model":
            p = e["payload"]
            self.last_model_uri = _log_weights_model(
                self.client, self._run_id(e), p["weights_file"], p["name"], p.get("model_config"),
                step=e.get("step") or 0)
            log.info("replayed logged model %s -> %s", p["weights_file"], self.last_model_uri)
        elif kind == "register":
            p = e["payload"]
            uri = p.get("model_uri") or self.last_model_uri
            if not uri:
                raise MlflowException("register: no logged model to register",
                                      error_code="INVALID_STATE")
            version = _register(self.client, uri, p["name"], p["alias"], e.get("run_id")
                                or self.state.get("run_id"))
            log.info("replayed registration: %s version %d (alias %s)", p["name"], version,
                     p["alias"])
        elif kind == "end":
            self.client.set_terminated(self._run_id(e), status=e["payload"]["status"],
                                       end_time=e["timestamp"])
        else:
            raise MlflowException(f"unknown spool entry kind {kind!r}", error_code="BAD_REQUEST")

    def replay(self, entries: list[dict]) -> list[dict]:
        """Send ``entries``; return those left (from the first one that met an outage)."""
        i = 0
        while i < len(entries):
            group = [entries[i]]
            if entries[i]["kind"] == "metrics":
                n = len(entries[i]["payload"])
                while (i + len(group) < len(entries)
                       and entries[i + len(group)]["kind"] == "metrics"
                       and entries[i + len(group)].get("run_id") == entries[i].get("run_id")
                       and n + len(entries[i + len(group)]["payload"]) <= MAX_METRICS_PER_BATCH):
                    n += len(entries[i + len(group)]["payload"])
                    group.append(entries[i + len(group)])
            try:
                self.send(group)
            except Exception as exc:  # noqa: BLE001 - classified below
                if _is_rejection(exc):
                    if len(group) > 1:   # find the bad entries of the batch one by one
                        rest = self.replay(group[:1]) + self.replay(group[1:])
                        if rest:
                            return rest + entries[i + len(group):]
                        i += len(group)
                        continue
                    _set_aside(self.run_dir, group[0], exc)
                    i += 1
                    continue
                self.error = exc
                return entries[i:]
            self.sent += len(group)
            i += len(group)
        return []


def _short(exc: BaseException | None, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " [...]"


def _set_aside(run_dir: Path, entry: dict, exc: BaseException) -> None:
    path = run_dir / REJECTED_FILENAME
    _append_jsonl(path, [dict(entry, error=f"{type(exc).__name__}: {exc}")])
    log.warning("MLflow refused a %s entry (%s); kept in %s", entry.get("kind"), exc, path)


def replay_spool(run_dir: str | Path, tracking_uri: str | None = None) -> int:
    """Send the entries spooled in ``<run_dir>/tracking_spool.jsonl`` to ``tracking_uri`` (default:
    the URI recorded in ``tracking.json``, else ``$MLFLOW_TRACKING_URI``); return how many went.
    Sent entries leave the spool; entries the store refuses go to ``tracking_rejected.jsonl``.
    Raises :class:`TrackingUnavailableError` (with ``.sent``) when the store cannot be reached;
    what was not sent stays spooled. Do not run it while the training that owns ``run_dir`` is
    still tracking (that tracker replays by itself when the store comes back)."""
    run_dir = Path(run_dir)
    state = _read_state(run_dir)
    uri = tracking_uri or state.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError(f"replay_spool: no tracking URI for {run_dir} (pass one, or set "
                         "MLFLOW_TRACKING_URI)")
    if tracking_uri and state.get("run_id") and state.get("tracking_uri") not in (None, uri):
        log.warning("replaying into %s, but run %s was created in %s", uri, state["run_id"],
                    state["tracking_uri"])
    return _replay(run_dir, uri)


def _replay(run_dir: Path, uri: str) -> int:
    entries = read_spool(run_dir)
    if not entries:
        return 0
    replayer = _Replayer(run_dir, _client(uri), uri)
    left = replayer.replay(entries)
    spool = run_dir / SPOOL_FILENAME
    if left:
        atomic_write_text(spool, "".join(json.dumps(e, default=str) + "\n" for e in left))
        raise TrackingUnavailableError(
            f"tracking store {uri} unreachable ({type(replayer.error).__name__}: "
            f"{_short(replayer.error)}): sent {replayer.sent} spooled entries, {len(left)} still "
            f"in {spool}", sent=replayer.sent)
    spool.unlink(missing_ok=True)
    return replayer.sent


# ---------------------------------------------------------------------------------------------
# system metrics


class _SystemSampler(threading.Thread):
    """Samples MLflow's system monitors every ``interval`` seconds into ``tracker``."""

    def __init__(self, tracker: Tracker, interval: float, first_step: int = 0):
        super().__init__(daemon=True, name="stcnn-system-metrics")
        from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
        from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
        from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

        self.monitors = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
        try:
            from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
            self.monitors.append(GPUMonitor())
        except Exception:  # noqa: BLE001 - no NVIDIA GPU or no pynvml
            pass
        self.tracker, self.interval, self.step = tracker, interval, first_step
        self.stop_event = threading.Event()

    def sample(self) -> None:
        metrics: dict[str, float] = {}
        for m in self.monitors:
            m.collect_metrics()
            metrics.update(m.aggregate_metrics())
            m.clear_metrics()
        if metrics:
            self.tracker._record({f"system/{k}": v for k, v in metrics.items()}, self.step,
                                 flush=True)
            self.step += 1

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 - never kill training over a psutil hiccup
                log.debug("system metrics sample failed: %s", e)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# the tracker


class Tracker:
    """One MLflow run for one training phase; see the module docstring."""

    def __init__(self, cfg: TrackingConfig, *, phase: str, run_dir: str | Path, rank: int = 0,
                 default_store: str | Path | None = None):
        self.cfg = cfg
        self.phase = phase
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.active = bool(cfg.enabled) and rank == 0
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.last_model_uri: str | None = None
        self.registered_version: int | None = None
        self._client: mlflow.MlflowClient | None = None
        self._lock = threading.RLock()
        self._pending: list[dict] = []        # metrics entries not sent yet
        self._calls = 0
        self._offline = False                 # in an outage: spool without trying
        self._next_retry = 0.0
        self._sampler: _SystemSampler | None = None
        self._started = False
        self._ended = False
        if cfg.enabled:
            configure_http(cfg.request_timeout_s, cfg.request_max_retries)
        if self.active:
            self.tracking_uri = resolve_tracking_uri(cfg.tracking_uri, default_store
                                                     if default_store is not None else run_dir)

    # -- paths and environment for child phases

    @property
    def spool_path(self) -> Path:
        return self.run_dir / SPOOL_FILENAME

    @property
    def offline(self) -> bool:
        """True while the store is unreachable and calls are being spooled."""
        return self._offline

    def child_env(self) -> dict[str, str]:
        """Environment for phases launched under this (pipeline) run: they nest under it and use
        the same store."""
        if not self.active or not self.run_id:
            return {}
        return {PARENT_RUN_ENV: self.run_id, "MLFLOW_TRACKING_URI": self.tracking_uri or ""}

    # -- lifecycle

    def start(self, params: dict, tags: dict | None = None) -> None:
        """Open the run (or reopen the one ``tracking.json`` names), log ``params`` flattened
        and the tags (phase, git, environment), and start the system metrics sampler."""
        if not self.active or self._started:
            return
        self._started = True
        self.run_dir.mkdir(parents=True, exist_ok=True)
        flat = flatten_params(params)
        all_tags = {"phase": self.phase, **git_info(), "mlflow.source.name": sys.argv[0] or "",
                    "mlflow.source.type": "LOCAL"}
        if not any(k == "torch_version" for k in (tags or {})):
            all_tags.update(environment_info(int(os.environ.get("WORLD_SIZE", "1"))))
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})
        parent = self.cfg.parent_run_id or os.environ.get(PARENT_RUN_ENV) or None
        spec = {"experiment": self.cfg.experiment, "run_name": self.cfg.run_name or self.phase,
                "parent_run_id": parent, "tags": all_tags}
        state = _read_state(self.run_dir)
        pending_start = any(e["kind"] == "start" for e in read_spool(self.run_dir))
        state.update({"phase": self.phase, "tracking_uri": self.tracking_uri,
                      "experiment": self.cfg.experiment, "parent_run_id": parent})
        resumed = False
        try:
            with self._lock:
                self._client = _client(self.tracking_uri)
                if pending_start:       # an earlier attempt never reached the store
                    self._try_recover(force=True)     # warns when it still cannot
                    state["run_id"] = _read_state(self.run_dir).get("run_id")
                if not self._offline:
                    resumed = self._open_run(state, spec)
        except Exception as exc:  # noqa: BLE001
            if _is_rejection(exc):
                raise        # a wrong URI, a deleted experiment: a configuration error
            self._go_offline(exc)
        if self.run_id is None and not pending_start and not state.get("run_id"):
            self._spool([_entry("start", None, spec)])
        elif self.run_id is None and state.get("run_id") and not pending_start:
            self.run_id = state["run_id"]
            self._spool([_entry("reopen", self.run_id, {})])
        _write_state(self.run_dir, {**state, "run_id": self.run_id or state.get("run_id")})
        self._log_start_params(flat, all_tags, resumed, params)
        if self.cfg.system_metrics:
            try:
                first = self._next_system_step() if resumed else 0
                self._sampler = _SystemSampler(self, self.cfg.system_metrics_interval_s, first)
                self._sampler.start()
            except Exception as e:  # noqa: BLE001 - psutil missing, ...
                log.warning("system metrics disabled: %s", e)

    def _open_run(self, state: dict, spec: dict) -> bool:
        """Reopen ``state['run_id']`` if the store has it, else create the run; True if reopened."""
        assert self._client is not None
        old = state.get("run_id")
        if old:
            try:
                run = self._client.get_run(old)
            except MlflowException as e:
                if not _is_rejection(e):
                    raise
                log.warning("run %s from %s is not in %s: starting a new run", old,
                            self.run_dir / STATE_FILENAME, self.tracking_uri)
            else:
                if run.info.lifecycle_stage == "active":
                    self._client.update_run(old, status="RUNNING")
                    self.run_id = old
                    log.info("MLflow: resumed run %s (%s)", old, self.tracking_uri)
                    return True
        self.run_id = _create_run(self._client, self.tracking_uri, spec)
        _write_state(self.run_dir, {**state, "run_id": self.run_id})
        log.info("MLflow: run %s in %s (experiment %s)", self.run_id, self.tracking_uri,
                 spec["experiment"])
        return False

    def _log_start_params(self, flat: dict[str, str], tags: dict[str, str], resumed: bool,
                          params: dict) -> None:
        """Params are immutable in MLflow: on resume only new keys are logged, changed ones are
        reported (and kept as ``resumed.<key>`` tags)."""
        if resumed and self._client is not None and not self._offline:
            try:
                old = self._client.get_run(self.run_id).data.params
            except Exception:  # noqa: BLE001
                old = {}
            changed = {k: v for k, v in flat.items() if k in old and old[k] != v}
            if changed:
                log.warning("resumed run %s: params changed since the first attempt (MLflow "
                            "keeps the first values; new ones tagged resumed.*): %s",
                            self.run_id, sorted(changed))
                tags = {**tags, **{f"resumed.{k}": v for k, v in changed.items()}}
            flat = {k: v for k, v in flat.items() if k not in old}
        self._call("tags", tags)
        if flat:
            self._call("params", flat)
        self._call("dict", {"data": redact_tree(params), "file": "config.json"})

    def _next_system_step(self) -> int:
        try:
            run = self._client.get_run(self.run_id)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001
            return 0
        steps = [m.step for m in run.data._metric_objs if m.key.startswith("system/")]
        return max(steps) + 1 if steps else 0

    def end(self, status: str = "FINISHED") -> None:
        """Stop the sampler, flush, and close the run as FINISHED, FAILED or KILLED. When the
        store is still down, reconnection is tried for ``final_retry_s``; what stays spooled is
        reported (with the command that sends it later)."""
        if not self.active or not self._started or self._ended:
            return
        self._ended = True
        if self._sampler is not None:
            self._sampler.stop()
            try:
                self._sampler.sample()        # the tail since the last interval
            except Exception:  # noqa: BLE001
                pass
        self.flush()
        self._call("end", {"status": status})
        deadline = time.monotonic() + self.cfg.final_retry_s
        while True:
            with self._lock:
                if self._offline:
                    self._try_recover(force=True)
                offline = self._offline
            left = deadline - time.monotonic()
            if not offline or left <= 0:
                break
            time.sleep(min(1.0, left))
        if self.spool_path.is_file():
            n = len(read_spool(self.run_dir))
            log.warning("MLflow: %d tracking entries are still spooled in %s; send them with "
                        "`python launch/tracking_sync.py %s` once %s is reachable", n,
                        self.spool_path, self.run_dir, redact("uri", str(self.tracking_uri)))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")

    # -- logging

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step``; sent every ``log_every`` calls in log_batch calls.
        Values may be floats, ints or 0-d tensors."""
        if not self.active or not self._started:
            return
        self._calls += 1
        self._record({k: float(v) for k, v in metrics.items()}, step,
                     flush=self._calls >= self.cfg.log_every)

    def _record(self, metrics: dict[str, float], step: int, flush: bool) -> None:
        with self._lock:
            self._pending.append(_entry("metrics", self.run_id, metrics, step))
            n = sum(len(e["payload"]) for e in self._pending)
            if flush or n >= MAX_METRICS_PER_BATCH:
                self.flush()

    def flush(self) -> None:
        """Send buffered metrics now (or spool them during an outage)."""
        if not self.active:
            return
        with self._lock:
            pending, self._pending, self._calls = self._pending, [], 0
            if not pending:
                return
            for e in pending:            # entries buffered before the run existed
                e["run_id"] = e["run_id"] or self.run_id
            if not self._ready():
                self._spool(pending)
                return
            try:
                _send_metrics(self._client, self.run_id, pending)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001
                self._failed(pending, exc)

    def log_params(self, params: dict) -> None:
        """Log more params (flattened like the config)."""
        if self.active and self._started:
            self._call("params", flatten_params(params))

    def set_tags(self, tags: dict) -> None:
        if self.active and self._started:
            self._call("tags", {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder (its contents) under ``artifact_path``."""
        if not self.active or not self._started:
            return
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"log_artifact: {p} does not exist")
        self._call("artifact", {"path": str(p.resolve()), "artifact_path": artifact_path})

    def log_checkpoint(self, ckpt_dir: str | Path, step: int) -> None:
        """Upload a checkpoint (folder or file) under ``checkpoints/step_<step:08d>``."""
        self.log_artifact(ckpt_dir, f"checkpoints/step_{step:08d}")

    def log_model(self, weights_file: str | Path, *, name: str = "model",
                  model_config: dict | None = None, step: int = 0) -> str | None:
        """Log ``weights_file`` as a logged model (pyfunc ``WeightsModel``, the file stored
        as ``weights.pt``) and return its URI ``models:/<model_id>`` (None when not logged now:
        rank != 0, disabled, or spooled during an outage; ``register()`` then follows it)."""
        if not self.active or not self._started:
            return None
        if not Path(weights_file).is_file():
            raise FileNotFoundError(f"log_model: weights file {weights_file} does not exist")
        payload = {"weights_file": str(Path(weights_file).resolve()), "name": name,
                   "model_config": model_config}
        self.last_model_uri = None
        self._call("model", payload, step=step)
        return self.last_model_uri

    def register(self, model_uri: str | None = None) -> int | None:
        """Register ``model_uri`` (default: the last :meth:`log_model`) as ``cfg.register_as``
        and set ``cfg.alias`` on the new version; return the version (None when not registered
        now: no ``register_as``, rank != 0, or spooled during an outage)."""
        if not self.active or not self._started or not self.cfg.register_as:
            return None
        uri = model_uri or self.last_model_uri
        if uri is None and not self._offline and not self.spool_path.is_file():
            log.warning("MLflow: nothing to register as %s (no logged model: log_model was not "
                        "called or its call was refused, see %s)", self.cfg.register_as,
                        self.run_dir / REJECTED_FILENAME)
            return None
        payload = {"model_uri": uri, "name": self.cfg.register_as, "alias": self.cfg.alias}
        version = self._call("register", payload)
        if version is not None:
            self.registered_version = version
        return version

    # -- plumbing

    def _ready(self) -> bool:
        """True when calls may go to the store (reconnecting first after an outage, at most every
        retry_interval_s)."""
        if self._client is None:
            return False
        if self._offline:
            self._try_recover()
        return not self._offline and self.run_id is not None

    def _call(self, kind: str, payload: Any, step: int | None = None) -> Any:
        """Run one tracking call now, or spool it. Everything buffered goes first (order)."""
        with self._lock:
            if self._pending:
                self.flush()
            entry = _entry(kind, self.run_id, payload, step)
            if not self._ready():
                self._spool([entry])
                return None
            try:
                return self._send(entry)
            except Exception as exc:  # noqa: BLE001
                self._failed([entry], exc)
                return None

    def _send(self, entry: dict) -> Any:
        kind, p, run_id, c = entry["kind"], entry["payload"], self.run_id, self._client
        assert c is not None and run_id is not None
        if kind == "params":
            _send_params(c, run_id, p)
        elif kind == "tags":
            _send_tags(c, run_id, p)
        elif kind == "dict":
            c.log_dict(run_id, p["data"], p["file"])
        elif kind == "artifact":
            _send_artifact(c, run_id, p["path"], p["artifact_path"])
        elif kind == "model":
            self.last_model_uri = _log_weights_model(c, run_id, p["weights_file"], p["name"],
                                                     p["model_config"], step=entry["step"] or 0)
            log.info("MLflow: logged model %s", self.last_model_uri)
            return self.last_model_uri
        elif kind == "register":
            version = _register(c, p["model_uri"], p["name"], p["alias"], run_id)
            log.info("MLflow: registered %s version %d, alias %s -> models:/%s@%s", p["name"],
                     version, p["alias"], p["name"], p["alias"])
            return version
        elif kind == "end":
            c.set_terminated(run_id, status=p["status"])
        else:
            raise ValueError(f"unknown tracking call {kind!r}")
        return None

    def _failed(self, entries: list[dict], exc: BaseException) -> None:
        if _is_rejection(exc):
            for e in entries:
                _set_aside(self.run_dir, e, exc)
            return
        self._go_offline(exc)
        self._spool(entries)

    def _go_offline(self, exc: BaseException) -> None:
        if not self._offline:
            self._offline = True
            log.warning(
                "MLflow tracking store %s is unreachable (%s: %s). Training goes on; metrics and "
                "other tracking calls are spooled to %s and sent when the store answers again "
                "(checked every %g s), or later with `python launch/tracking_sync.py %s`.",
                redact("uri", str(self.tracking_uri)), type(exc).__name__,
                redact("error", _short(exc)), self.spool_path,
                self.cfg.retry_interval_s, self.run_dir)
        self._next_retry = time.monotonic() + self.cfg.retry_interval_s

    def _spool(self, entries: list[dict]) -> None:
        try:
            _append_jsonl(self.spool_path, entries)
        except OSError as e:       # the disk itself fails: say what is lost, keep training
            log.error("cannot write the tracking spool %s (%s): %d tracking entries lost (%s)",
                      self.spool_path, e, len(entries),
                      ", ".join(sorted({x["kind"] for x in entries})))

    def _probe(self) -> bool:
        """A cheap reachability test (any HTTP answer within ~1 s) before replaying."""
        if not _is_http(self.tracking_uri or ""):
            return True
        import requests

        try:
            requests.get(self.tracking_uri.rstrip("/") + "/health",
                         timeout=min(1.0, self.cfg.request_timeout_s))
            return True
        except requests.RequestException:
            return False

    def _try_recover(self, force: bool = False) -> None:
        """During an outage: probe the store (at most every retry_interval_s unless ``force``);
        when it answers, replay the spool and go back live."""
        if not force and time.monotonic() < self._next_retry:
            return
        self._next_retry = time.monotonic() + self.cfg.retry_interval_s
        if not self._probe():
            self._go_offline(ConnectionError(f"no answer from {self.tracking_uri} within "
                                             f"{min(1.0, self.cfg.request_timeout_s):.0f} s"))
            return
        try:
            sent = _replay(self.run_dir, self.tracking_uri)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - unreachable, or answering but broken
            self._go_offline(e)
            log.debug("MLflow replay stopped: %s", e)
            return
        was_offline, self._offline = self._offline, False
        state = _read_state(self.run_dir)
        if self.run_id is None and state.get("run_id"):
            self.run_id = state["run_id"]
        if was_offline or sent:
            log.warning("MLflow tracking store %s reachable again: %d spooled entries sent "
                        "(run %s)", self.tracking_uri, sent, self.run_id)


# ---------------------------------------------------------------------------------------------
# init_from


def _find_weights(root: Path) -> Path | None:
    found = sorted(root.rglob(WEIGHTS_FILENAME), key=lambda p: (len(p.parts), str(p)))
    if len(found) > 1 and len(found[0].parts) == len(found[1].parts):
        raise ValueError(f"several {WEIGHTS_FILENAME} files in {root}: "
                         f"{[str(p) for p in found]}; point the URI at one of them")
    return found[0] if found else None


def _models_uri_location(client: mlflow.MlflowClient, uri: str) -> str:
    """The artifact location behind ``models:/<name>@<alias>[/sub]``,
    ``models:/<name>/<version|latest>[/sub]`` or ``models:/<model_id>[/sub]``, resolved with
    ``client`` (MLflow's own resolution ignores the registry URI it is given and uses the
    process-global one)."""
    parts = uri[len("models:/"):].strip("/").split("/")
    if not parts or not parts[0]:
        raise ValueError(f"{uri!r} names no model")
    if "@" in parts[0]:
        name, alias = parts[0].split("@", 1)
        version, sub = client.get_model_version_by_alias(name, alias).version, parts[1:]
    elif len(parts) >= 2 and (parts[1].isdigit() or parts[1] == "latest"):
        name, sub = parts[0], parts[2:]
        version = parts[1]
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise MlflowException(f"registered model {name!r} has no versions",
                                      error_code="RESOURCE_DOES_NOT_EXIST")
            version = max(versions, key=lambda v: int(v.version)).version
    else:
        location = client.get_logged_model(parts[0]).artifact_location
        return "/".join([location.rstrip("/"), *parts[1:]])
    location = client.get_model_version_download_uri(name, str(version))
    if location.startswith("models:/"):       # registered from a models:/<model_id> source
        return _models_uri_location(client, location)
    return "/".join([location.rstrip("/"), *sub])


def resolve_init(uri: str, dst: str | Path | None = None, *,
                 tracking_uri: str | None = None, what: str = "init_from") -> Path:
    """Where the weights named by ``init_from`` are, locally.

    * a local file or folder: returned as it is (error when missing);
    * ``runs:/<run_id>/<path>``: downloaded; a file is returned, a folder gives the
      ``weights.pt`` inside it, else the folder itself (a checkpoint folder);
    * ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<model_id>``:
      downloaded; the ``weights.pt`` inside it is returned.

    Downloads go to ``dst`` (default: a new temporary folder, left for the caller). The store is
    ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's default. Errors name the
    setting as ``what`` (``init_from``, ``--checkpoint``)."""
    if not uri.startswith(("runs:/", "models:/")):
        path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{what}={uri!r}: no such file or folder (expected a weights file, a "
                "checkpoint folder, a runs:/<run_id>/<path> or a models:/<name>@<alias> URI)")
        return path
    store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    out = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="stcnn-init-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        source = uri
        if uri.startswith("models:/"):
            source = _models_uri_location(_client(store), uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(out),
                                                         tracking_uri=store))
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
        raise FileNotFoundError(
            f"{what}={uri!r}: could not download it from tracking store {store} ({e}). Check "
            "the run id / model name and alias, and that MLFLOW_TRACKING_URI (or "
            "tracking.tracking_uri) names the store that holds it.") from e
    if local.is_file():
        return local
    weights = _find_weights(local)
    if weights is not None:
        return weights
    if uri.startswith("models:/"):
        raise FileNotFoundError(f"{what}={uri!r}: the model has no {WEIGHTS_FILENAME} "
                                f"(downloaded to {local}); was it logged with Tracker.log_model?")
    return local


__all__ = [
    "TrackingConfig", "Tracker", "TrackingUnavailableError", "WEIGHTS_FILENAME",
    "configure_http", "environment_info", "flatten_params", "git_info", "read_spool",
    "replay_spool", "resolve_init", "resolve_tracking_uri", "validate_alias", "embedded_uri",
]
