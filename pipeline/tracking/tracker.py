"""The tracker: one MLflow run per training phase, rank 0 only, spooling through outages
(see :mod:`pipeline.tracking`).

Resumed runs: the run's id is kept in ``run_dir/tracking.json``; a phase started again in the
same ``run_dir`` reopens that run (one run per phase, however often it stops and resumes). Every
step an attempt runs is logged by it: steps an earlier attempt had logged and a resume runs
again (after a crash past the last checkpoint, or a fallback to an older checkpoint) are logged
again, and MLflow keeps both values (the later timestamps are the resumed attempt's); nothing is
overwritten. A call whose answer was lost after the store committed it is spooled
and sent again with the original timestamps; MLflow's SQL stores keep one row for an identical
(key, timestamp, step, value), so the resend does not double a step.

Long (over 400 lines) on purpose: every call a run makes (parameters, metrics, artifacts,
models, registration, the end) goes through the one outage path of this class.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.tracking.config import (MAX_METRICS_PER_BATCH, PARENT_RUN_ENV, REJECTED_FILENAME,
                                      SPOOL_FILENAME, STATE_FILENAME, TrackingConfig,
                                      configure_http, is_http, make_client,
                                      resolve_tracking_uri)
from pipeline.tracking.info import environment_info, git_info
from pipeline.tracking.inflight import async_supported, InFlight
from pipeline.tracking.outage import is_rejection, short_error
from pipeline.tracking.redact import flatten_params, redact, redact_tree
from pipeline.tracking.send import create_run, send_entry, send_metrics
from pipeline.tracking.spool import (append_jsonl, make_entry, read_spool, read_state,
                                     replay_run_dir, set_aside, write_state)
from pipeline.tracking.system import SystemSampler

log = logging.getLogger(__name__)


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
        self._inflight = InFlight()           # metrics on MLflow's async queue
        self._calls = 0
        self._offline = False                 # in an outage: spool without trying
        self._next_retry = 0.0
        self._sampler: SystemSampler | None = None
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
        state = read_state(self.run_dir)
        pending_start = any(e["kind"] == "start" for e in read_spool(self.run_dir))
        state.update({"phase": self.phase, "tracking_uri": self.tracking_uri,
                      "experiment": self.cfg.experiment, "parent_run_id": parent})
        resumed = False
        try:
            with self._lock:
                self._client = make_client(self.tracking_uri)
                if pending_start:       # an earlier attempt never reached the store
                    self._try_recover(force=True)     # warns when it still cannot
                    state["run_id"] = read_state(self.run_dir).get("run_id")
                if not self._offline:
                    resumed = self._open_run(state, spec)
        except Exception as exc:  # noqa: BLE001
            if is_rejection(exc):
                raise        # a wrong URI, a deleted experiment: a configuration error
            self._go_offline(exc)
        if self.run_id is None and not pending_start and not state.get("run_id"):
            self._spool([make_entry("start", None, spec)])
        elif self.run_id is None and state.get("run_id") and not pending_start:
            self.run_id = state["run_id"]
            self._spool([make_entry("reopen", self.run_id, {})])
        write_state(self.run_dir, {**state, "run_id": self.run_id or state.get("run_id")})
        self._log_start_params(flat, all_tags, resumed, params)
        if self.cfg.system_metrics:
            try:
                first = self._next_system_step() if resumed else 0
                self._sampler = SystemSampler(self._record, self.cfg.system_metrics_interval_s,
                                              first)
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
                if not is_rejection(e):
                    raise
                log.warning("run %s from %s is not in %s: starting a new run", old,
                            self.run_dir / STATE_FILENAME, self.tracking_uri)
            else:
                if run.info.lifecycle_stage == "active":
                    self._client.update_run(old, status="RUNNING")
                    self.run_id = old
                    log.info("MLflow: resumed run %s (%s)", old, self.tracking_uri)
                    return True
        self.run_id = create_run(self._client, self.tracking_uri, spec)
        write_state(self.run_dir, {**state, "run_id": self.run_id})
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
            self._pending.append(make_entry("metrics", self.run_id, metrics, step))
            n = sum(len(e["payload"]) for e in self._pending)
            if flush or n >= MAX_METRICS_PER_BATCH:
                self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Send buffered metrics now (or spool them during an outage); ``wait``: until every
        metric handed to MLflow's async queue has landed or been spooled."""
        if not self.active:
            return
        with self._lock:
            pending, self._pending, self._calls = self._pending, [], 0
            for e in pending:            # entries buffered before the run existed
                e["run_id"] = e["run_id"] or self.run_id
            if pending and not self._ready():
                self._spool(pending)
            elif pending:
                try:
                    if self.cfg.async_metrics and async_supported():
                        self._inflight.submit(self._client, self.run_id, pending)
                    else:
                        send_metrics(self._client, self.run_id, pending)  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001
                    self._failed(pending, exc)
            for entries, exc in self._inflight.reap(block=wait):
                self._failed(entries, exc)

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
            if self._pending or len(self._inflight):
                self.flush()             # metrics land (or are spooled) before this call
            entry = make_entry(kind, self.run_id, payload, step)
            if not self._ready():
                self._spool([entry])
                return None
            try:
                return self._send(entry)
            except Exception as exc:  # noqa: BLE001
                self._failed([entry], exc)
                return None

    def _send(self, entry: dict) -> Any:
        assert self._client is not None and self.run_id is not None
        result = send_entry(self._client, self.run_id, entry, last_model_uri=self.last_model_uri)
        p = entry["payload"]
        if entry["kind"] == "model":
            self.last_model_uri = result
            log.info("MLflow: logged model %s", result)
        elif entry["kind"] == "register":
            log.info("MLflow: registered %s version %d, alias %s -> models:/%s@%s", p["name"],
                     result, p["alias"], p["name"], p["alias"])
        return result

    def _failed(self, entries: list[dict], exc: BaseException) -> None:
        if is_rejection(exc):
            for e in entries:
                set_aside(self.run_dir, e, exc)
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
                redact("error", short_error(exc)), self.spool_path,
                self.cfg.retry_interval_s, self.run_dir)
        self._next_retry = time.monotonic() + self.cfg.retry_interval_s

    def _spool(self, entries: list[dict]) -> None:
        try:
            append_jsonl(self.spool_path, entries)
        except OSError as e:       # the disk itself fails: say what is lost, keep training
            log.error("cannot write the tracking spool %s (%s): %d tracking entries lost (%s)",
                      self.spool_path, e, len(entries),
                      ", ".join(sorted({x["kind"] for x in entries})))

    def _probe(self) -> bool:
        """A cheap reachability test (any HTTP answer within ~1 s) before replaying."""
        if not is_http(self.tracking_uri or ""):
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
            sent = replay_run_dir(self.run_dir, self.tracking_uri)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - unreachable, or answering but broken
            self._go_offline(e)
            log.debug("MLflow replay stopped: %s", e)
            return
        was_offline, self._offline = self._offline, False
        state = read_state(self.run_dir)
        if self.run_id is None and state.get("run_id"):
            self.run_id = state["run_id"]
        if was_offline or sent:
            log.warning("MLflow tracking store %s reachable again: %d spooled entries sent "
                        "(run %s)", self.tracking_uri, sent, self.run_id)
