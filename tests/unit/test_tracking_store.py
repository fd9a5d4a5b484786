"""Which tracking store ``models:/`` and ``runs:/`` URIs resolve in (``store_for``): with no
``tracking.tracking_uri`` and no ``$MLFLOW_TRACKING_URI``, the embedded store beside the run
(``<run_dir's parent>/mlflow.db``, where the Tracker registers models), whatever the working
directory; a missing store is an error that names it and creates nothing. Also the UI line the
jobs print for a store (``ui_hint``). The tests on a real store share one (``runs``), which
takes MLflow about 8 s to create: they are marked slow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.tracking import Tracker, TrackingConfig, embedded_uri, resolve_init

MODEL = "stcnn-ssb"


@pytest.fixture(autouse=True)
def _no_store_in_env(monkeypatch, tmp_path):
    """No store named by the environment, and a working directory of its own (where MLflow's
    default store would appear)."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "STCNN_PARENT_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield
    assert sorted(os.listdir(cwd)) == [], "something was written to the working directory"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs/pretrain_ssb``: weights registered as stcnn-ssb@candidate in the embedded store
    ``runs/mlflow.db``, as the training runner leaves them (Tracker with default_store = the
    run folder's parent)."""
    from pipeline.train.weights import save_weights

    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    root = tmp_path_factory.mktemp("store") / "runs"
    run_dir = root / "pretrain_ssb"
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    weights = save_weights(run_dir / "weights.pt", {"SSB": nn.Conv2d(3, 4, 3)},
                           phase="segmentation", step=4, model_config={"tiny": True})
    cfg = TrackingConfig(register_as=MODEL, alias="candidate", system_metrics=False)
    with Tracker(cfg, phase="pretrain_ssb", run_dir=run_dir, default_store=root) as tracker:
        tracker.start({"steps": 4})
        tracker.log_model(weights)
        tracker.register()
    for k, v in saved.items():
        if v is not None:
            os.environ[k] = v
    return {"root": root, "weights": weights, "run_id": tracker.run_id,
            "uri": tracker.tracking_uri}


def _same_weights(path: Path, expected: Path) -> None:
    got = torch.load(path, weights_only=True)["models"]["SSB"]
    want = torch.load(expected, weights_only=True)["models"]["SSB"]
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.slow            # creating the sqlite store: ~8 s
def test_store_of_a_run_dir_is_the_embedded_store_beside_it(runs, monkeypatch):
    from pipeline.tracking import store_for

    root = runs["root"]
    assert runs["uri"] == embedded_uri(root)
    assert store_for(root / "train_offline") == embedded_uri(root)
    assert store_for(root / "train_offline", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert store_for(root / "train_offline") == "http://127.0.0.1:5001"


@pytest.mark.slow            # creating the sqlite store: ~8 s
def test_models_uri_resolves_in_the_run_dirs_store_from_another_working_dir(runs, tmp_path):
    from pipeline.tracking import store_for

    store = store_for(runs["root"] / "train_offline")
    got = resolve_init(f"models:/{MODEL}@candidate", tmp_path / "dl", tracking_uri=store)
    _same_weights(got, runs["weights"])


@pytest.mark.slow            # creating the sqlite store: ~8 s
def test_segment_checkpoint_resolves_in_the_store_beside_its_out_folder(runs):
    from pipeline.jobs.segment.config import SegmentConfig, load_checkpoint_weights

    cfg = SegmentConfig(checkpoint=f"models:/{MODEL}@candidate", out=str(runs["root"] / "seg"))
    models, model_config = load_checkpoint_weights(cfg)
    want = torch.load(runs["weights"], weights_only=True)["models"]["SSB"]
    assert model_config == {"tiny": True}
    assert all(torch.equal(models["SSB"][k], v) for k, v in want.items())


def test_missing_sqlite_store_is_an_error_naming_it_and_creates_nothing(tmp_path):
    store = embedded_uri(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        resolve_init(f"models:/{MODEL}@candidate", tmp_path / "dl", tracking_uri=store)
    msg = str(err.value)
    assert "\n" not in msg
    assert store in msg and "does not exist" in msg
    assert "tracking.tracking_uri=" in msg and "MLFLOW_TRACKING_URI" in msg
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "dl").exists()


def test_no_store_given_is_an_error_not_mlflows_default_in_the_working_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no tracking store.*tracking\.tracking_uri="):
        resolve_init(f"models:/{MODEL}@candidate", tmp_path / "dl")
    # the autouse fixture checks that no mlflow.db appeared in the working directory


@pytest.mark.slow            # creating the sqlite store: ~8 s
def test_ui_hint_gives_the_command_and_the_experiments_runs_link(runs):
    from pipeline.tracking import ui_hint

    from mlflow import MlflowClient

    exp = MlflowClient(runs["uri"]).get_run(runs["run_id"]).info.experiment_id
    link = f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
    assert ui_hint(runs["uri"], runs["run_id"]).splitlines() == [
        f"MLflow UI: mlflow ui --backend-store-uri {runs['uri']} --port 5000 --workers 1",
        f"  then open {link}"]


def test_ui_hint_for_a_server_is_its_link_without_credentials():
    from pipeline.tracking import ui_hint

    assert ui_hint("http://u:secret@127.0.0.1:1") == (
        "MLflow UI: http://***@127.0.0.1:1/#/experiments?workflowType=machine_learning")
