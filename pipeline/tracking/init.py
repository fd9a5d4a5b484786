"""``init_from`` resolution: a local path, ``runs:/`` or ``models:/`` URI -> the weights file on disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.tracking.config import WEIGHTS_FILENAME, make_client, sqlite_file
from pipeline.core.errors import InputMissing
from pipeline.core.config import ConfigError

# how to look elsewhere, in every error about the store
OTHER_STORE = ("name the store that holds it with tracking.tracking_uri=URI (or "
               "MLFLOW_TRACKING_URI=URI)")


def _find_weights(root: Path) -> Path | None:
    found = sorted(root.rglob(WEIGHTS_FILENAME), key=lambda p: (len(p.parts), str(p)))
    if len(found) > 1 and len(found[0].parts) == len(found[1].parts):
        raise ConfigError(f"several {WEIGHTS_FILENAME} files in {root}: "
                         f"{[str(p) for p in found]}; point the URI at one of them")
    return found[0] if found else None


def _models_uri_location(client: mlflow.MlflowClient, uri: str) -> str:
    """The artifact location behind ``models:/<name>@<alias>[/sub]``,
    ``models:/<name>/<version|latest>[/sub]`` or ``models:/<model_id>[/sub]``, resolved with
    ``client`` (MLflow's own resolution ignores the registry URI it is given and uses the
    process-global one)."""
    parts = uri[len("models:/"):].strip("/").split("/")
    if not parts or not parts[0]:
        raise ConfigError(f"{uri!r} names no model")
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
    ``tracking_uri`` (a run's :func:`~pipeline.tracking.config.store_for`), else
    ``$MLFLOW_TRACKING_URI``; never MLflow's default, which would create ``mlflow.db`` in the
    working directory. A ``sqlite:///`` store whose file does not exist is an error before any
    MLflow client opens it (and so creates it). Errors name the setting as ``what``
    (``init_from``, ``--checkpoint``) and the store looked in."""
    if not uri.startswith(("runs:/", "models:/")):
        path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
        if not path.exists():
            raise InputMissing(
                f"{what}={uri!r}: no such file or folder (expected a weights file, a "
                "checkpoint folder, a runs:/<run_id>/<path> or a models:/<name>@<alias> URI)")
        return path
    store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not store:
        raise InputMissing(f"{what}={uri!r}: no tracking store to look it up in; "
                                f"{OTHER_STORE}")
    db = sqlite_file(store)
    if db is not None and not db.is_file():
        raise InputMissing(f"{what}={uri!r}: tracking store {store} does not exist (no "
                                f"file {db}); {OTHER_STORE}")
    out = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="stcnn-init-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        source = uri
        if uri.startswith("models:/"):
            source = _models_uri_location(make_client(store), uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(out),
                                                         tracking_uri=store))
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
        raise InputMissing(
            f"{what}={uri!r}: could not download it from tracking store {store} ({e}). Check "
            f"the run id / model name and alias, or {OTHER_STORE}") from e
    if local.is_file():
        return local
    weights = _find_weights(local)
    if weights is not None:
        return weights
    if uri.startswith("models:/"):
        raise InputMissing(f"{what}={uri!r}: the model has no {WEIGHTS_FILENAME} "
                                f"(downloaded to {local}); was it logged with Tracker.log_model?")
    return local
