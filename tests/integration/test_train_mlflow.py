"""The training phases tracked in a real ``mlflow server`` on 127.0.0.1 (sqlite backend), as a
user chains them: GAN pretraining on 2 ranks and SSB pretraining nested under one pipeline run,
registered as ``stcnn-tcb`` / ``stcnn-ssb``; offline training then starts from
``models:/stcnn-tcb@candidate`` and ``models:/stcnn-ssb@candidate`` and registers ``stcnn``.
With the server stopped, training still completes and its metrics wait in the spool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from support import closed_port
from support.mlflow_proxy import MlflowProxy
from support.training import REPO, torchrun

pytestmark = pytest.mark.slow
STEPS = 3


def launch(phase: str, lake: Path, run_dir: Path, env_extra: dict, *extra: str, nproc: int = 1):
    """A phase of ``STEPS`` steps, tracked in experiment ``stcnn-test``: plain ``python`` for one
    process, torchrun for more; must succeed."""
    return torchrun(phase, lake, run_dir, f"steps={STEPS}", "tracking.experiment=stcnn-test",
                    *extra, nproc=nproc, python_if_one=True, tracking=True, env_extra=env_extra,
                    check=True)


@pytest.fixture(scope="module")
def chained(server, train_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    client = server.client()
    exp = client.get_experiment_by_name("stcnn-test") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("stcnn-test")
    parent = client.create_run(exp_id, run_name="pipeline").info.run_id
    env = {"MLFLOW_TRACKING_URI": server.uri, "STCNN_PARENT_RUN_ID": parent}
    launch("gan", train_lake, root / "tcb", env, nproc=2)
    launch("segmentation", train_lake, root / "ssb", env)
    dump_env = dict(env, STCNN_INIT_DUMP=str(root / "offline_init.pt"),
                    PYTHONPATH=os.pathsep.join([str(REPO / "tests"),
                                                os.environ.get("PYTHONPATH", "")]))
    launch("alternating", train_lake, root / "offline", dump_env, "init_missing=error",
           "init_from=[models:/stcnn-tcb@candidate,models:/stcnn-ssb@candidate]",
           "hooks=[init_dump_hook:dump]")
    client.set_terminated(parent)
    runs = {d: json.loads((root / d / "summary.json").read_text())["mlflow_run_id"]
            for d in ("tcb", "ssb", "offline")}
    return {"client": client, "parent": parent, "runs": runs, "root": root, "uri": server.uri}


def test_runs_nested_with_params_tags_and_metrics(chained):
    c = chained["client"]
    for name, run_id in chained["runs"].items():
        run = c.get_run(run_id)
        assert run.info.status == "FINISHED", name
        assert run.data.tags["mlflow.parentRunId"] == chained["parent"]
        assert run.data.tags["torch_version"] == torch.__version__
        assert "git.commit" in run.data.tags and run.data.tags["device_type"] == "cpu"
        assert run.data.params["steps"] == str(STEPS)
        hist = [m for m in c.get_metric_history(run_id, "throughput/samples_per_s")]
        assert sorted(m.step for m in hist) == list(range(1, STEPS + 1))
        assert c.get_metric_history(run_id, "time/step_s")
    tcb = c.get_run(chained["runs"]["tcb"])
    assert tcb.data.tags["world_size"] == "2"              # one run for two ranks
    assert tcb.data.params["loss.lambda_adv"] == "0.001"
    assert len(c.get_metric_history(chained["runs"]["tcb"], "G/loss")) == STEPS
    assert len(c.get_metric_history(chained["runs"]["ssb"], "SSB/loss")) == STEPS
    children = c.search_runs([c.get_run(chained["parent"]).info.experiment_id],
                             f"tags.mlflow.parentRunId = '{chained['parent']}'")
    assert len(children) == 3                              # rank 1 created no run


def test_checkpoints_and_registered_models(chained):
    c = chained["client"]
    for name, model in (("tcb", "stcnn-tcb"), ("ssb", "stcnn-ssb"), ("offline", "stcnn")):
        run_id = chained["runs"][name]
        ckpts = [a.path for a in c.list_artifacts(run_id, "checkpoints")]
        assert ckpts == [f"checkpoints/step_{STEPS:08d}"], ckpts       # the last one
        files = {a.path.rsplit("/", 1)[-1] for a in c.list_artifacts(run_id, ckpts[0])}
        assert {"meta.json", "shared.pt", "rank_00000.pt"} <= files
        mv = c.get_model_version_by_alias(model, "candidate")
        assert mv.run_id == run_id


def test_offline_phase_started_from_registered_models(chained):
    c = chained["client"]
    tags = c.get_run(chained["runs"]["offline"]).data.tags
    assert "models:/stcnn-tcb@candidate" in tags["init_from"]
    assert "models:/stcnn-ssb@candidate" in tags["init_from"]
    # the weights it started from are those the two pretraining runs exported
    from pipeline.tracking import resolve_init
    got = torch.load(resolve_init("models:/stcnn-ssb@candidate", chained["root"] / "dl",
                                  tracking_uri=chained["uri"]),
                     weights_only=True)
    local = torch.load(chained["root"] / "ssb" / "weights.pt", weights_only=True)
    for k, v in local["models"]["SSB"].items():
        assert torch.equal(v, got["models"]["SSB"][k])
    # and the offline run started from exactly those weights: G and D of the TCB run, the SSB
    # of the SSB run (its engines' state before step 1, dumped by tests/init_dump_hook.py)
    start = torch.load(chained["root"] / "offline_init.pt", weights_only=True)
    tcb = torch.load(chained["root"] / "tcb" / "weights.pt", weights_only=True)["models"]
    sources = {"G": tcb["G"], "D": tcb["D"], "SSB": local["models"]["SSB"]}
    assert set(start) == set(sources)
    for branch, weights in sources.items():
        assert set(start[branch]) == set(weights), branch
        for k, v in weights.items():
            assert torch.equal(start[branch][k], v), f"{branch}.{k} is not the exported weight"


def test_training_completes_with_the_server_stopped(server, train_lake, tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}"               # no server there any more
    run_dir = tmp_path / "offline_tcb"
    proc = launch("gan", train_lake, run_dir, {"MLFLOW_TRACKING_URI": dead},
                  "tracking.request_timeout_s=2", "tracking.final_retry_s=0")
    assert "unreachable" in proc.stderr and "tracking_spool.jsonl" in proc.stderr
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["completed"] and (run_dir / "weights.pt").is_file()
    spool = [json.loads(line) for line in (run_dir / "tracking_spool.jsonl").read_text().splitlines()]
    kinds = {e["kind"] for e in spool}
    assert {"start", "params", "metrics", "artifact", "model", "register", "end"} <= kinds, kinds
    # later, the spool goes to a live server: nothing was dropped
    with MlflowProxy(server.uri) as proxy:                  # counts what reaches the server
        sync = subprocess.run([sys.executable, str(REPO / "launch" / "tracking_sync.py"),
                               str(run_dir), "--tracking-uri", proxy.uri], capture_output=True,
                              text=True, timeout=300)
    assert sync.returncode == 0, sync.stderr[-3000:]
    # the run the sync created is the one tracking.json names (no other fixture's run)...
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    c = server.client()
    run = c.get_run(run_id)
    assert run.data.tags["phase"] == "gan" and run.info.status == "FINISHED"
    # ... and it holds every spooled metric at exactly the spooled steps, nothing more or less
    expected: dict[str, list[int]] = {}
    for e in spool:
        if e["kind"] == "metrics":
            for key in e["payload"]:
                expected.setdefault(key, []).append(e["step"])
    assert expected["G/loss"] == list(range(1, STEPS + 1)), expected["G/loss"]
    for key, steps in expected.items():
        got = sorted(m.step for m in c.get_metric_history(run_id, key))
        assert got == sorted(steps), f"{key}: synced steps {got}, spooled {sorted(steps)}"
        # at the wire: each spooled (key, step) sent once, not once per attempt
        assert proxy.sends_per_step(key, run_id) == Counter(steps), key
    assert all(m.answered for m in proxy.sent_metrics(run_id))
