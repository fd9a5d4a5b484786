"""Sending tracking entries to the store: the experiment and the run, params, tags, metrics,
artifacts, models; one switch by entry kind used live and on replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from pipeline.tracking.config import (EMBEDDED_ARTIFACTS, MAX_METRICS_PER_BATCH,
                                      MAX_PARAMS_PER_BATCH, sqlite_folder)
from pipeline.tracking.registry import log_weights_model, register_model


# MLflow 3's UI opens an experiment on the GenAI overview unless its kind says otherwise; ours
# are model training (the value the UI's "experiment type" selector writes).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(client: mlflow.MlflowClient, uri: str, name: str) -> str:
    """The id of experiment ``name`` (created when missing, its artifacts beside a sqlite store),
    marked as a model-training experiment for MLflow's UI unless a kind is already set."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise MlflowException(
                f"MLflow experiment {name!r} is deleted in {uri}: restore it (mlflow experiments "
                "restore) or set tracking.experiment to another name",
                error_code="INVALID_STATE")
        if EXPERIMENT_KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    artifact_location = None
    folder = sqlite_folder(uri)
    if folder is not None:   # not ./mlruns in whatever folder the job started from
        artifact_location = (folder / EMBEDDED_ARTIFACTS).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException as e:   # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise e
        return exp.experiment_id


def create_run(client: mlflow.MlflowClient, uri: str, spec: dict) -> str:
    exp_id = ensure_experiment(client, uri, spec["experiment"])
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


def send_metrics(client: mlflow.MlflowClient, run_id: str, entries: list[dict], *,
                 synchronous: bool = True) -> list:
    """Metrics entries in ``log_batch`` calls; ``synchronous=False`` queues them on MLflow's
    async logging thread and returns its ``RunOperations`` (one per call)."""
    metrics = _metric_objs(entries)
    ops = []
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        chunk = metrics[i:i + MAX_METRICS_PER_BATCH]
        if synchronous:
            client.log_batch(run_id, metrics=chunk)
        else:
            ops.append(client.log_batch(run_id, metrics=chunk, synchronous=False))
    return ops


def _send_artifact(client: mlflow.MlflowClient, run_id: str, path: str,
                   artifact_path: str | None) -> None:
    p = Path(path)
    if p.is_dir():
        client.log_artifacts(run_id, str(p), artifact_path)
    elif p.is_file():
        client.log_artifact(run_id, str(p), artifact_path)
    else:
        raise FileNotFoundError(f"artifact {p} does not exist (any more)")


def send_entry(client: mlflow.MlflowClient, run_id: str, entry: dict, *,
               last_model_uri: str | None = None) -> Any:
    """Send one entry of run ``run_id`` that is not metrics (those go in batches,
    :func:`send_metrics`) nor the run's creation: the one switch by entry kind, for live calls
    and replay alike. Returns the logged model's URI for ``model``, the registered version for
    ``register`` (``model_uri`` None: ``last_model_uri``), else None."""
    kind, p = entry["kind"], entry["payload"]
    if kind == "params":
        _send_params(client, run_id, p)
    elif kind == "tags":
        _send_tags(client, run_id, p)
    elif kind == "dict":
        client.log_dict(run_id, p["data"], p["file"])
    elif kind == "artifact":
        _send_artifact(client, run_id, p["path"], p.get("artifact_path"))
    elif kind == "model":
        return log_weights_model(client, run_id, p["weights_file"], p["name"],
                                 p.get("model_config"), step=entry.get("step") or 0)
    elif kind == "register":
        uri = p.get("model_uri") or last_model_uri
        if not uri:
            raise MlflowException("register: no logged model to register",
                                  error_code="INVALID_STATE")
        return register_model(client, uri, p["name"], p["alias"], run_id)
    elif kind == "reopen":
        client.update_run(run_id, status="RUNNING")
    elif kind == "end":
        client.set_terminated(run_id, status=p["status"], end_time=entry.get("timestamp"))
    else:
        raise MlflowException(f"unknown tracking entry kind {kind!r}", error_code="BAD_REQUEST")
    return None
