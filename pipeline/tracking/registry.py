"""Weights as MLflow logged models (a models-from-code pyfunc carrier) and their registration
under a name with an alias."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from mlflow.entities import LoggedModelOutput
from mlflow.exceptions import MlflowException

from pipeline.tracking.config import WEIGHTS_FILENAME


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


def log_weights_model(client: mlflow.MlflowClient, run_id: str, weights_file: str | Path,
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


def register_model(client: mlflow.MlflowClient, model_uri: str, name: str, alias: str,
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
