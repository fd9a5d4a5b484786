"""The MLflow UI line the jobs end with: how to open a store in MLflow's UI and the link that
lands a fresh browser on an experiment's training runs.

MLflow 3's UI opens in its GenAI mode unless the browser has switched to "Model training"
before (the choice lives in the browser's local storage and ignores the experiment's
``mlflow.experimentKind`` tag): its home page and an experiment's "Overview" then show traces
and token usage, not training runs. A link carrying ``workflowType=machine_learning`` opens the
runs page in the "Model training" mode (with the model registry in the sidebar) in any browser.

    MLflow UI: mlflow ui --backend-store-uri sqlite:////abs/runs/mlflow.db --port 5000 --workers 1
      then open http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning

For an ``http(s)://`` store the server is the UI: the line is the link alone.
"""

from __future__ import annotations

import logging
import shlex

from pipeline.tracking.config import is_http, make_client
from pipeline.tracking.redact import redact

UI_PORT = 5000
WORKFLOW_QUERY = "workflowType=machine_learning"
log = logging.getLogger(__name__)


def runs_link(base_url: str, experiment_id: str | None) -> str:
    """The page of an experiment's training runs (the experiments list without an id)."""
    page = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{base_url.rstrip('/')}/#/{page}?{WORKFLOW_QUERY}"


def experiment_of(tracking_uri: str, run_id: str) -> str | None:
    """The experiment id of ``run_id`` in the store, or None when the store does not say."""
    try:
        return make_client(tracking_uri).get_run(run_id).info.experiment_id
    except Exception as exc:  # noqa: BLE001 - the link then opens the experiments list
        log.info("MLflow: experiment of run %s not found in %s (%s)", run_id,
                 redact("uri", tracking_uri), exc)
        return None


def ui_hint(tracking_uri: str, run_id: str | None = None, *, port: int = UI_PORT) -> str:
    """``MLflow UI: ...``: for an HTTP store, the link to the training runs of ``run_id``'s
    experiment on that server; for any other store (the embedded sqlite one), the
    ``mlflow ui`` command that serves it on 127.0.0.1:``port`` and then that link. Credentials
    in the URI are shown as ``***``."""
    experiment_id = experiment_of(tracking_uri, run_id) if run_id else None
    shown = redact("uri", tracking_uri)
    if is_http(tracking_uri):
        return f"MLflow UI: {runs_link(shown, experiment_id)}"
    command = (f"mlflow ui --backend-store-uri {shlex.quote(shown)} --port {port} "
               "--workers 1")
    return (f"MLflow UI: {command}\n"
            f"  then open {runs_link(f'http://127.0.0.1:{port}', experiment_id)}")
