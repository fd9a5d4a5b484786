"""The disk spool that MLflow lacks: tracking calls kept as JSON lines while the store is down,
the run folder's state file, and the replay that sends them later in order."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.core.atomic import atomic_write_text
from pipeline.core.config import ConfigError
from pipeline.tracking.config import (MAX_METRICS_PER_BATCH, REJECTED_FILENAME, SPOOL_FILENAME,
                                      STATE_FILENAME, make_client)
from pipeline.tracking.outage import TrackingUnavailableError, is_rejection, short_error
from pipeline.tracking.send import create_run, send_entry, send_metrics

log = logging.getLogger(__name__)


def make_entry(kind: str, run_id: str | None, payload: Any, step: int | None = None,
           timestamp: int | None = None) -> dict:
    return {"kind": kind, "run_id": run_id, "payload": payload, "step": step,
            "timestamp": int(time.time() * 1000) if timestamp is None else timestamp}


def append_jsonl(path: Path, entries: Iterable[dict]) -> None:
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


def read_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILENAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s unreadable (%s): starting a new MLflow run", path, e)
        return {}


def write_state(run_dir: Path, state: dict) -> None:
    atomic_write_text(run_dir / STATE_FILENAME, json.dumps(state, indent=2, sort_keys=True) + "\n")


class Replayer:
    """Sends spooled entries in order; stops at the first outage, sets rejected ones aside."""

    def __init__(self, run_dir: Path, client: mlflow.MlflowClient, uri: str):
        self.run_dir, self.client, self.uri = run_dir, client, uri
        self.state = read_state(run_dir)
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
            send_metrics(self.client, self._run_id(e), group)
        elif kind == "start":
            if not self.state.get("run_id"):
                spec = dict(e["payload"], start_time=e["timestamp"])
                self.state["run_id"] = create_run(self.client, self.uri, spec)
                self.state["tracking_uri"] = self.uri
                write_state(self.run_dir, self.state)
        else:
            result = send_entry(self.client, self._run_id(e), e,
                                last_model_uri=self.last_model_uri)
            if kind == "model":
                self.last_model_uri = result
                log.info("replayed logged model %s -> %s", e["payload"]["weights_file"], result)
            elif kind == "register":
                log.info("replayed registration: %s version %d (alias %s)", e["payload"]["name"],
                         result, e["payload"]["alias"])

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
                if is_rejection(exc):
                    if len(group) > 1:   # find the bad entries of the batch one by one
                        rest = self.replay(group[:1]) + self.replay(group[1:])
                        if rest:
                            return rest + entries[i + len(group):]
                        i += len(group)
                        continue
                    set_aside(self.run_dir, group[0], exc)
                    i += 1
                    continue
                self.error = exc
                return entries[i:]
            self.sent += len(group)
            i += len(group)
        return []


def set_aside(run_dir: Path, entry: dict, exc: BaseException) -> None:
    path = run_dir / REJECTED_FILENAME
    append_jsonl(path, [dict(entry, error=f"{type(exc).__name__}: {exc}")])
    log.warning("MLflow refused a %s entry (%s); kept in %s", entry.get("kind"), exc, path)


def replay_spool(run_dir: str | Path, tracking_uri: str | None = None) -> int:
    """Send the entries spooled in ``<run_dir>/tracking_spool.jsonl`` to ``tracking_uri`` (default:
    the URI recorded in ``tracking.json``, else ``$MLFLOW_TRACKING_URI``); return how many went.
    Sent entries leave the spool; entries the store refuses go to ``tracking_rejected.jsonl``.
    Raises :class:`TrackingUnavailableError` (with ``.sent``) when the store cannot be reached;
    what was not sent stays spooled. Do not run it while the training that owns ``run_dir`` is
    still tracking (that tracker replays by itself when the store comes back)."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    uri = tracking_uri or state.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError(f"{run_dir}: no tracking URI recorded for this run",
                          "pass --tracking-uri, or set MLFLOW_TRACKING_URI")
    if tracking_uri and state.get("run_id") and state.get("tracking_uri") not in (None, uri):
        log.warning("replaying into %s, but run %s was created in %s", uri, state["run_id"],
                    state["tracking_uri"])
    return replay_run_dir(run_dir, uri)


def replay_run_dir(run_dir: Path, uri: str) -> int:
    entries = read_spool(run_dir)
    if not entries:
        return 0
    replayer = Replayer(run_dir, make_client(uri), uri)
    left = replayer.replay(entries)
    spool = run_dir / SPOOL_FILENAME
    if left:
        atomic_write_text(spool, "".join(json.dumps(e, default=str) + "\n" for e in left))
        raise TrackingUnavailableError(
            f"tracking store {uri} unreachable ({type(replayer.error).__name__}: "
            f"{short_error(replayer.error)}): sent {replayer.sent} spooled entries, {len(left)} still "
            f"in {spool}", sent=replayer.sent)
    spool.unlink(missing_ok=True)
    return replayer.sent
