"""MLflow tracking (pipeline/tracking/) against a real ``mlflow server`` started by a fixture,
plus outages (a port with nothing listening, and an HTTP proxy in front of the server that is cut
and restored mid-run and counts the metric entries that reach the server), the embedded sqlite
default, rank != 0, resume and ``resolve_init``."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import mlflow

from support import closed_port  # noqa: E402
from support.mlflow_proxy import MlflowProxy  # noqa: E402

from pipeline.core.config import ConfigError  # noqa: E402
from pipeline.tracking import (PARAM_VALUE_MAX, REJECTED_FILENAME, SPOOL_FILENAME,  # noqa: E402
                               STATE_FILENAME, TRUNCATED_MARKER, WEIGHTS_FILENAME, Tracker,
                               TrackingConfig, environment_info, flatten_params, git_info,
                               read_spool, replay_spool, resolve_init)

REPO = Path(__file__).resolve().parents[2]
TRACKER_LOGGER = "pipeline.tracking"   # the package; its modules log as pipeline.tracking.<module>


@pytest.fixture(autouse=True, scope="module")
def _isolated_env():
    """Trackers set MLFLOW_HTTP_* for the process and tests export MLFLOW_TRACKING_URI: nothing
    leaks out of this module, and no tracking URI or parent run comes in from outside."""
    saved = dict(os.environ)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "STCNN_PARENT_RUN_ID"):
        os.environ.pop(key, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_tracking_uri_env():
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "STCNN_PARENT_RUN_ID"):
        os.environ.pop(key, None)


def _weights(tmp: Path, seed: int = 0) -> tuple[Path, dict]:
    g = torch.Generator().manual_seed(seed)
    state = {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.zeros(4)}
    path = tmp / "final.pt"
    torch.save(state, path)
    return path, state


def _assert_same_state(path: Path, state: dict) -> None:
    loaded = torch.load(path, weights_only=True)
    assert loaded.keys() == state.keys()
    for k in state:
        assert torch.equal(loaded[k], state[k]), k


PARAMS = {"seed": 3, "optim": {"g": {"lr": 1e-4, "betas": [0.9, 0.999]}, "d": {"lr": 4e-4}},
          "data": {"shards": "x" * 900}}


@pytest.fixture(scope="module")
def phase_run(server, tmp_path_factory) -> dict:
    """A pipeline run and a nested pretrain_tcb run that logs everything and registers."""
    tmp = tmp_path_factory.mktemp("phase_run")
    parent = Tracker(TrackingConfig(tracking_uri=server.uri, system_metrics=False),
                     phase="pipeline", run_dir=tmp / "pipeline")
    parent.start({"phases": ["pretrain_tcb"]})
    env = parent.child_env()
    assert env["STCNN_PARENT_RUN_ID"] == parent.run_id
    os.environ.update(env)             # as the pipeline driver exports it to a phase
    try:
        cfg = TrackingConfig(tracking_uri=None, register_as="stcnn-tcb", log_every=2,
                             system_metrics=True, system_metrics_interval_s=0.2)
        tracker = Tracker(cfg, phase="pretrain_tcb", run_dir=tmp / "tcb")
        ckpt = tmp / "ckpt"
        ckpt.mkdir()
        (ckpt / "engine_g.pt").write_bytes(b"g")
        (ckpt / "engine_d.pt").write_bytes(b"d")
        weights, state = _weights(tmp)
        with tracker:
            tracker.start(PARAMS, tags=environment_info(world_size=2, device="cpu"))
            for step in range(5):
                tracker.log_metrics({"loss/g": 1.0 / (step + 1), "loss/d": torch.tensor(0.5),
                                     "throughput/samples_per_s": 10.0 + step}, step)
            time.sleep(0.5)            # a few system metric samples
            tracker.log_checkpoint(ckpt, step=4)
            model_uri = tracker.log_model(weights, model_config={"backbone": "resnet101"})
            version = tracker.register()
        parent.end()
    finally:
        for key in env:
            os.environ.pop(key, None)
    return {"parent": parent.run_id, "run_id": tracker.run_id, "model_uri": model_uri,
            "version": version, "state": state, "tmp": tmp, "run_dir": tmp / "tcb"}


@pytest.mark.slow
def test_phase_run_is_logged_nested_and_registered(server, phase_run):
    c = server.client()
    run = c.get_run(phase_run["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "pretrain_tcb"
    assert run.data.tags["mlflow.parentRunId"] == phase_run["parent"]
    assert c.get_run(phase_run["parent"]).info.status == "FINISHED"
    # params: flattened, stringified, long values cut with a marker
    p = run.data.params
    assert p["optim.g.lr"] == "0.0001" and p["optim.g.betas"] == "[0.9, 0.999]"
    assert p["seed"] == "3"
    assert len(p["data.shards"]) == PARAM_VALUE_MAX and p["data.shards"].endswith(TRUNCATED_MARKER)
    # tags: phase, git, environment
    t = run.data.tags
    assert t["phase"] == "pretrain_tcb"
    assert t["git.commit"] == git_info()["git.commit"] and t["git.dirty"] in ("true", "false",
                                                                             "unknown")
    assert t["torch_version"] == torch.__version__ and t["world_size"] == "2"
    assert t["device_type"] == "cpu" and "cuda_version" in t and "device_count" in t
    # metrics: every step, several keys; system metrics sampled
    hist = c.get_metric_history(phase_run["run_id"], "loss/g")
    assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [0, 1, 2, 3, 4]
    assert len(c.get_metric_history(phase_run["run_id"], "throughput/samples_per_s")) == 5
    assert any(k.startswith("system/cpu") for k in run.data.metrics)
    # artifacts: the full config and the checkpoint folder
    top = {a.path for a in c.list_artifacts(phase_run["run_id"])}
    assert {"config.json", "checkpoints"} <= top
    files = {a.path for a in c.list_artifacts(phase_run["run_id"], "checkpoints/step_00000004")}
    assert files == {"checkpoints/step_00000004/engine_g.pt",
                     "checkpoints/step_00000004/engine_d.pt"}
    # the logged model and its registered version
    assert phase_run["model_uri"].startswith("models:/m-")
    logged = c.get_logged_model(phase_run["model_uri"][len("models:/"):])
    assert logged.source_run_id == phase_run["run_id"]
    mv = c.get_model_version_by_alias("stcnn-tcb", "candidate")
    assert int(mv.version) == phase_run["version"] and mv.run_id == phase_run["run_id"]
    state = json.loads((phase_run["run_dir"] / STATE_FILENAME).read_text())
    assert state["run_id"] == phase_run["run_id"] and state["tracking_uri"] == server.uri
    assert not (phase_run["run_dir"] / SPOOL_FILENAME).exists()


@pytest.mark.slow
def test_resolve_init_models_runs_and_local(server, phase_run, tmp_path):
    state = phase_run["state"]
    by_alias = resolve_init("models:/stcnn-tcb@candidate", tmp_path / "a", tracking_uri=server.uri)
    assert by_alias.name == WEIGHTS_FILENAME
    _assert_same_state(by_alias, state)
    by_version = resolve_init(f"models:/stcnn-tcb/{phase_run['version']}", tmp_path / "b",
                              tracking_uri=server.uri)
    _assert_same_state(by_version, state)
    _assert_same_state(resolve_init(phase_run["model_uri"], tmp_path / "c",
                                    tracking_uri=server.uri), state)
    # runs:/ to the checkpoint folder (no weights.pt: the folder) and to one file
    ckpt = resolve_init(f"runs:/{phase_run['run_id']}/checkpoints/step_00000004", tmp_path / "d",
                        tracking_uri=server.uri)
    assert ckpt.is_dir() and (ckpt / "engine_g.pt").read_bytes() == b"g"
    one = resolve_init(f"runs:/{phase_run['run_id']}/checkpoints/step_00000004/engine_d.pt",
                       tmp_path / "e", tracking_uri=server.uri)
    assert one.read_bytes() == b"d"
    # $MLFLOW_TRACKING_URI is used when no tracking_uri is given
    os.environ["MLFLOW_TRACKING_URI"] = server.uri
    _assert_same_state(resolve_init("models:/stcnn-tcb@candidate", tmp_path / "f"), state)
    # a local path comes back as it is
    local = phase_run["tmp"] / "final.pt"
    assert resolve_init(str(local)) == local
    _assert_same_state(resolve_init(str(local)), state)


@pytest.mark.slow
def test_resolve_init_errors_name_the_uri(server, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.pt"):
        resolve_init(str(tmp_path / "no_such.pt"))
    with pytest.raises(FileNotFoundError,
                       match=r"models:/stcnn-nope@candidate.*MLFLOW_TRACKING_URI"):
        resolve_init("models:/stcnn-nope@candidate", tmp_path / "x", tracking_uri=server.uri)


@pytest.mark.slow
def test_second_registration_moves_the_alias(server, phase_run, tmp_path):
    cfg = TrackingConfig(tracking_uri=server.uri, register_as="stcnn-tcb", alias="candidate",
                         system_metrics=False)
    weights, state = _weights(tmp_path, seed=1)
    with Tracker(cfg, phase="pretrain_tcb", run_dir=tmp_path / "run") as tr:
        tr.start({"seed": 1})
        tr.log_model(weights)
        version = tr.register()
    assert version > phase_run["version"]
    mv = server.client().get_model_version_by_alias("stcnn-tcb", "candidate")
    assert int(mv.version) == version
    _assert_same_state(resolve_init("models:/stcnn-tcb@candidate", tmp_path / "dl",
                                    tracking_uri=server.uri), state)


def _outage_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith(TRACKER_LOGGER + ".") and r.levelno == logging.WARNING
            and "unreachable" in r.getMessage() and "training goes on" in r.getMessage().lower()]


@pytest.mark.slow
def test_outage_spools_everything_then_replays(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=TRACKER_LOGGER)
    dead = f"http://127.0.0.1:{closed_port()}"          # nothing listens there
    cfg = TrackingConfig(tracking_uri=dead, register_as="stcnn-tcb", alias="outage",
                         system_metrics=False, request_timeout_s=2)
    run_dir = tmp_path / "run"
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "state.pt").write_bytes(b"s")
    weights, state = _weights(tmp_path, seed=2)
    t0 = time.monotonic()
    with Tracker(cfg, phase="train_offline", run_dir=run_dir) as tr:
        tr.start(PARAMS)
        for step in range(50):
            tr.log_metrics({"loss": float(step)}, step)
        tr.log_artifact(tmp_path / "ckpt", "extra")
        assert tr.log_model(weights) is None and tr.register() is None
        assert tr.offline and tr.run_id is None
    elapsed = time.monotonic() - t0
    assert elapsed < 30, f"an outage stalled training for {elapsed:.1f} s"
    assert len(_outage_records(caplog)) == 1
    assert dead in _outage_records(caplog)[0].getMessage()
    spooled = read_spool(run_dir)
    metrics = [e for e in spooled if e["kind"] == "metrics"]
    assert len(metrics) == 50 and [e["step"] for e in metrics] == list(range(50))
    assert all({"kind", "payload", "step", "timestamp"} <= e.keys() for e in spooled)
    assert {e["kind"] for e in spooled} >= {"start", "params", "tags", "artifact", "model",
                                            "register", "end"}

    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"         # a loaded machine, one more hop
    with MlflowProxy(server.uri) as proxy:                   # counts what reaches the server
        sent = replay_spool(run_dir, proxy.uri)
    assert sent == len(spooled)
    assert not (run_dir / SPOOL_FILENAME).exists()
    run_id = json.loads((run_dir / STATE_FILENAME).read_text())["run_id"]
    c = server.client()
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["optim.g.lr"] == "0.0001"
    hist = c.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in hist) == list(range(50))
    assert {m.timestamp for m in hist} == {e["timestamp"] for e in metrics}
    # at the wire: each spooled step sent once, every send answered
    assert proxy.sends_per_step("loss", run_id) == Counter(range(50))
    assert all(m.answered for m in proxy.sent_metrics(run_id))
    assert {a.path for a in c.list_artifacts(run_id, "extra")} == {"extra/state.pt"}
    mv = c.get_model_version_by_alias("stcnn-tcb", "outage")
    assert mv.run_id == run_id
    _assert_same_state(resolve_init("models:/stcnn-tcb@outage", tmp_path / "dl",
                                    tracking_uri=server.uri), state)
    assert replay_spool(run_dir, server.uri) == 0            # nothing left


@pytest.mark.slow
@pytest.mark.parametrize("async_metrics", [False, True], ids=["sync", "async"])
def test_outage_mid_run_recovers_by_itself(server, tmp_path, caplog, async_metrics):
    """Synchronous sends see the outage at the call; async ones (MLflow's queue) when their
    futures are reaped, at the latest by ``flush()``: the same entries end up spooled."""
    caplog.set_level(logging.INFO, logger=TRACKER_LOGGER)
    proxy = MlflowProxy(server.uri)
    proxy.start()
    # a cut proxy refuses connections at once; the timeout only has to outlast a loaded machine
    cfg = TrackingConfig(tracking_uri=proxy.uri, system_metrics=False, request_timeout_s=60,
                         retry_interval_s=0.5, async_metrics=async_metrics)
    run_dir = tmp_path / "run"
    try:
        with Tracker(cfg, phase="pretrain_ssb", run_dir=run_dir) as tr:
            tr.start({"seed": 0})
            run_id = tr.run_id
            for step in range(3):
                tr.log_metrics({"loss": float(step)}, step)
            if async_metrics:
                tr.flush()                                   # steps 0-2 landed
            proxy.stop()                                     # the server goes away
            t0 = time.monotonic()
            for step in range(3, 13):
                tr.log_metrics({"loss": float(step)}, step)
            if async_metrics:
                tr.flush()                                   # the failures are reaped
            assert time.monotonic() - t0 < 10
            assert tr.offline and len(read_spool(run_dir)) == 10
            time.sleep(0.6)
            tr.log_metrics({"loss": 13.0}, 13)               # probe fails (still down): spooled
            assert tr.offline and len(read_spool(run_dir)) == 11
            proxy.start()                                    # back
            time.sleep(0.6)
            tr.log_metrics({"loss": 14.0}, 14)               # probe answers: replay, then live
            assert not tr.offline and not (run_dir / SPOOL_FILENAME).exists()
            assert tr.run_id == run_id
    finally:
        proxy.stop()
    assert len(_outage_records(caplog)) == 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    c = server.client()
    assert c.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in c.get_metric_history(run_id, "loss")) == list(range(15))
    # at the wire: each step reached the server once (none sent again after the replay)
    assert proxy.sends_per_step("loss", run_id) == Counter(range(15))
    assert all(m.answered for m in proxy.sent_metrics(run_id))


@pytest.mark.slow
@pytest.mark.parametrize("async_metrics", [False, True], ids=["sync", "async"])
def test_store_back_while_the_run_ends_gets_everything(server, tmp_path, caplog, async_metrics):
    """The store is down when training ends and answers again a few seconds later: the run's
    end waits for it (tracking.final_retry_s) and delivers the spool itself."""
    caplog.set_level(logging.INFO, logger=TRACKER_LOGGER)
    proxy = MlflowProxy(server.uri)
    proxy.start()
    cfg = TrackingConfig(tracking_uri=proxy.uri, system_metrics=False, request_timeout_s=60,
                         retry_interval_s=60, final_retry_s=30, async_metrics=async_metrics)
    run_dir = tmp_path / "run"
    restart = threading.Timer(2.0, proxy.start)
    try:
        with Tracker(cfg, phase="pretrain_ssb", run_dir=run_dir) as tr:
            tr.start({"seed": 0})
            run_id = tr.run_id
            tr.log_metrics({"loss": 0.0}, 0)
            if async_metrics:
                tr.flush()                                   # step 0 landed
            proxy.stop()                                     # down for the rest of the run
            for step in range(1, 5):
                tr.log_metrics({"loss": float(step)}, step)
            if async_metrics:
                tr.flush()                                   # the failures are reaped
            assert tr.offline
            restart.start()                                  # back 2 s after the run ends
            t0 = time.monotonic()
        waited = time.monotonic() - t0
    finally:
        restart.cancel()
        restart.join()
        proxy.stop()
    assert 1.5 < waited < 20, waited
    assert not (run_dir / SPOOL_FILENAME).exists()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    c = server.client()
    assert c.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in c.get_metric_history(run_id, "loss")) == list(range(5))
    assert proxy.sends_per_step("loss", run_id) == Counter(range(5))   # each step sent once
    assert all(m.answered for m in proxy.sent_metrics(run_id))


@pytest.mark.slow
def test_tracking_sync_cli(server, tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}"
    run_dir = tmp_path / "run"
    with Tracker(TrackingConfig(tracking_uri=dead, system_metrics=False, final_retry_s=0),
                 phase="p", run_dir=run_dir) as tr:
        tr.start({"a": 1})
        for step in range(4):
            tr.log_metrics({"loss": float(step)}, step)
    n = len(read_spool(run_dir))
    script = REPO / "launch" / "tracking_sync.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    down = subprocess.run([sys.executable, str(script), str(run_dir), "--timeout", "2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert down.returncode == 1 and "unreachable" in down.stderr
    assert len(read_spool(run_dir)) == n                     # nothing lost
    up = subprocess.run([sys.executable, str(script), str(run_dir), "--tracking-uri", server.uri],
                        capture_output=True, text=True, env=env, timeout=120)
    assert up.returncode == 0, up.stderr
    assert f"sent {n} of {n}" in up.stdout
    run_id = json.loads((run_dir / STATE_FILENAME).read_text())["run_id"]
    assert len(server.client().get_metric_history(run_id, "loss")) == 4


@pytest.mark.slow
def test_rejected_call_is_kept_not_an_outage(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=TRACKER_LOGGER)
    with Tracker(TrackingConfig(tracking_uri=server.uri, system_metrics=False), phase="p",
                 run_dir=tmp_path / "run") as tr:
        tr.start({"optim": {"lr": 0.1}})
        tr.log_params({"optim": {"lr": 0.2}})                # MLflow params are immutable
        tr.log_metrics({"loss": 1.0}, 0)
        assert not tr.offline
    rejected = [json.loads(x) for x in
                (tmp_path / "run" / REJECTED_FILENAME).read_text().splitlines()]
    assert len(rejected) == 1 and rejected[0]["payload"] == {"optim.lr": "0.2"}
    assert not _outage_records(caplog)
    assert server.client().get_run(tr.run_id).data.metrics["loss"] == 1.0


def test_nonzero_rank_creates_nothing(tmp_path):
    weights, _ = _weights(tmp_path)
    # a dead server URI: a rank that tried to reach it would spool into run_dir
    dead = TrackingConfig(tracking_uri=f"http://127.0.0.1:{closed_port()}", register_as="stcnn")
    cases = ((dead, 1), (TrackingConfig(register_as="stcnn"), 3),
             (TrackingConfig(enabled=False), 0))
    for rank_cfg, rank in cases:
        tr = Tracker(rank_cfg, phase="p", run_dir=tmp_path / "run", rank=rank,
                     default_store=tmp_path / "store")
        with tr:
            tr.start(PARAMS)
            tr.log_metrics({"loss": 1.0}, 0)
            tr.log_artifact(weights)
            tr.log_checkpoint(tmp_path, 1)
            assert tr.log_model(weights) is None and tr.register() is None
        assert tr.run_id is None and tr.child_env() == {} and not tr.offline
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


@pytest.mark.slow
def test_resume_reopens_the_same_run(server, tmp_path):
    cfg = TrackingConfig(tracking_uri=server.uri, system_metrics=False)
    run_dir = tmp_path / "run"
    first = Tracker(cfg, phase="train_offline", run_dir=run_dir)
    first.start({"seed": 0, "resume": False})
    for step in range(3):
        first.log_metrics({"loss": float(step)}, step)
    first.flush()                                            # killed here: no end()
    again = Tracker(cfg, phase="train_offline", run_dir=run_dir)
    with again:
        again.start({"seed": 0, "resume": True, "extra": 1})
        assert again.run_id == first.run_id
        for step in range(3, 6):
            again.log_metrics({"loss": float(step)}, step)
    run = server.client().get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["resume"] == "False" and run.data.tags["resumed.resume"] == "True"
    assert run.data.params["extra"] == "1"
    assert sorted(m.step for m in server.client().get_metric_history(first.run_id, "loss")) == \
        list(range(6))


def test_embedded_default_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                              # nothing may land in the cwd
    store = tmp_path / "runs_root"
    cfg = TrackingConfig(register_as="stcnn", system_metrics=False)
    weights, state = _weights(tmp_path)
    with Tracker(cfg, phase="segment", run_dir=store / "segment", default_store=store) as tr:
        assert tr.tracking_uri == f"sqlite:///{store.resolve().as_posix()}/mlflow.db"
        tr.start({"seed": 0})
        tr.log_metrics({"loss": 0.5}, 0)
        tr.log_model(weights)
        assert tr.register() == 1
    assert (store / "mlflow.db").is_file() and (store / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    c = mlflow.MlflowClient(tr.tracking_uri)
    assert c.get_run(tr.run_id).data.metrics["loss"] == 0.5
    _assert_same_state(resolve_init("models:/stcnn@candidate", tmp_path / "dl",
                                    tracking_uri=tr.tracking_uri), state)


def test_experiments_open_as_model_training_in_the_ui(tmp_path):
    """MLflow 3's UI shows the GenAI overview unless the experiment's kind says model training:
    a new experiment gets the kind, an existing one without a kind gets it, a set one is kept."""
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    c = mlflow.MlflowClient(uri)
    c.create_experiment("old", artifact_location=(tmp_path / "old").as_uri())
    c.create_experiment("mine", artifact_location=(tmp_path / "mine").as_uri(),
                        tags={"mlflow.experimentKind": "genai_development"})
    for name in ("stcnn", "old", "mine"):
        cfg = TrackingConfig(tracking_uri=uri, experiment=name, system_metrics=False)
        with Tracker(cfg, phase="gan", run_dir=tmp_path / name) as tr:
            tr.start({"seed": 0})
    kinds = {n: c.get_experiment_by_name(n).tags.get("mlflow.experimentKind")
             for n in ("stcnn", "old", "mine")}
    assert kinds == {"stcnn": "custom_model_development", "old": "custom_model_development",
                     "mine": "genai_development"}


def test_config_rejects_reserved_aliases():
    for bad in ("latest", "LATEST", "v3", "V12", "has space", ""):
        with pytest.raises(ConfigError, match="alias"):
            TrackingConfig(alias=bad)
    assert TrackingConfig(alias="champion").alias == "champion"
    with pytest.raises(ConfigError):
        TrackingConfig(log_every=0)


def test_flatten_params():
    flat = flatten_params({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None, "f": "y" * 600})
    assert flat["a.b.c"] == "1" and flat["a.d"] == "[1, 2]" and flat["e"] == "None"
    assert len(flat["f"]) == PARAM_VALUE_MAX and flat["f"].endswith(TRUNCATED_MARKER)


def test_unanswering_server_costs_one_timeout(tmp_path, caplog):
    """A server that accepts connections but never answers (hung, or a black-holing proxy):
    the first call waits request_timeout_s, later steps spool without waiting, end() keeps
    probing for final_retry_s (1 s probes), then stops."""
    caplog.set_level(logging.INFO, logger=TRACKER_LOGGER)
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        cfg = TrackingConfig(tracking_uri=f"http://127.0.0.1:{hung.getsockname()[1]}",
                             system_metrics=False, request_timeout_s=1, final_retry_s=2)
        tr = Tracker(cfg, phase="p", run_dir=tmp_path / "run")
        t0 = time.monotonic()
        tr.start({"a": 1}, tags=environment_info(1, "cpu"))
        t_start = time.monotonic() - t0
        for step in range(200):
            tr.log_metrics({"loss": float(step)}, step)
        t_steps = time.monotonic() - t0 - t_start
        tr.end()
        t_total = time.monotonic() - t0
    # bounds wide enough for a loaded machine (load average 4), narrow enough to tell "waited
    # for the server" apart: one timeout at start, none per step (200 x 1 s), end ~ final_retry
    assert 0.9 < t_start < 15, t_start
    assert t_steps < 20, t_steps
    assert 2 <= t_total - t_start - t_steps < 2 + 15, t_total   # final_retry_s + one probe
    assert len(_outage_records(caplog)) == 1
    assert len([e for e in read_spool(tmp_path / "run") if e["kind"] == "metrics"]) == 200


def test_secrets_never_reach_params_or_logs():
    from pipeline.tracking import flatten_params, redact, redact_tree
    cfg = {"tracking": {"tracking_uri": "http://alice:s3cr3t@mlflow.internal:5000"},
           "s3": {"secret_access_key": "AKIAXYZ", "endpoint": "https://minio:9000"},
           "db_password": "hunter2", "optim": {"lr": 0.001}}
    flat = flatten_params(cfg)
    text = json.dumps(flat) + json.dumps(redact_tree(cfg))
    for secret in ("s3cr3t", "alice", "AKIAXYZ", "hunter2"):
        assert secret not in text
    assert flat["tracking.tracking_uri"] == "http://***@mlflow.internal:5000"
    assert flat["optim.lr"] == "0.001" and flat["s3.endpoint"] == "https://minio:9000"
    assert redact("error", "connect to http://u:p@h:1 failed") == "connect to http://***@h:1 failed"


@pytest.mark.slow  # > 5 s on 2 cores: keeps -m "not slow" under 3 min
def test_metrics_go_through_mlflows_async_queue_by_default(server, tmp_path):
    """The default sends metrics with MLflow's async logging (a newer MLflow whose futures this
    code cannot watch would fall back to synchronous sends: this fails first)."""
    from pipeline.tracking.inflight import async_supported

    assert TrackingConfig().async_metrics and async_supported()
    with Tracker(TrackingConfig(tracking_uri=server.uri, system_metrics=False),
                 phase="p", run_dir=tmp_path / "run") as tr:
        tr.start({"a": 1})
        for step in range(5):
            tr.log_metrics({"loss": float(step)}, step)
        assert tr._inflight.submitted == 5               # one log_batch per step (log_every 1)
        tr.flush()
        assert len(tr._inflight) == 0
        run_id = tr.run_id
    steps = sorted(m.step for m in server.client().get_metric_history(run_id, "loss"))
    assert steps == list(range(5))
