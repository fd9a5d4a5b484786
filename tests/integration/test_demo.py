"""The main job (`bash scripts/main.sh` -> launch/demo.py), shortened: every stage runs on
generated data, phases chain through registered models, and its output is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "STCNN_PARENT_RUN_ID", "RANK", "WORLD_SIZE")}
    scratch = tmp_path / "tmp"                   # the job's own temporary files go here
    scratch.mkdir()
    env["TMPDIR"] = str(scratch)
    cmd = [sys.executable, str(REPO / "launch" / "demo.py"), f"out={out}", "steps.gan=3",
           "steps.segmentation=4", "steps.alternating=4", "segment.iterations=6",
           "segment.dreams=3", "sample_data.sequences=2", "sample_data.frames=8",
           "sample_data.images=12"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "J&F-Mean" in proc.stdout and "mlflow ui --backend-store-uri sqlite:" in proc.stdout
    # the final table compares offline training with online tuning alone, with a verdict
    assert "offline training vs online tuning alone" in proc.stdout
    assert ("offline training helps here" in proc.stdout) != \
        ("offline training does NOT visibly help here" in proc.stdout)
    # weights fetched from models:/ URIs (3 phases + segmentation) are not left behind
    assert not list(scratch.glob("stcnn-init-*")), sorted(p.name for p in scratch.iterdir())

    s = json.loads((out / "summary.json").read_text())
    assert set(s["phases"]) == {"pretrain_tcb", "pretrain_ssb", "train_offline"}
    assert all(p["steps"] > 0 and p["mlflow_run_id"] for p in s["phases"].values())
    ev = s["segment"]["evaluation"]["metrics"]
    assert 0.0 <= ev["J-Mean"] <= 1.0 and 0.0 <= ev["F-Mean"] <= 1.0
    assert s["segment"]["timing"]["tune_s_per_frame"] > 0
    assert (out / "results" / "eval" / "global_results-val.csv").is_file()
    cmp = s["offline_vs_online_only"]
    base = s["online_only"]["evaluation"]["metrics"]
    assert cmp["J_offline"] == ev["J-Mean"] and cmp["J_online_only"] == base["J-Mean"]
    assert cmp["helps"] == (cmp["J_difference"] >= cmp["margin"])
    assert (out / "results_online_only" / "eval" / "global_results-val.csv").is_file()

    import mlflow
    client = mlflow.MlflowClient(tracking_uri=s["mlflow"]["tracking_uri"])
    parent = s["mlflow"]["run_id"]
    exp = client.get_experiment_by_name("stcnn-demo")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["phase"] for r in children) == \
        ["alternating", "gan", "segment", "segment", "segmentation"]
    for name in ("stcnn-tcb", "stcnn-ssb", "stcnn"):
        assert client.get_model_version_by_alias(name, "demo")
    offline = [r for r in children if r.data.tags["phase"] == "alternating"][0]
    assert "models:/stcnn-tcb@demo" in offline.data.tags["init_from"]
    seg = [r for r in children if r.data.tags["phase"] == "segment"
           and r.data.tags.get("mlflow.runName") == "segment"][0]
    assert "eval/J-Mean" in seg.data.metrics and "time/tune_s_per_frame" in seg.data.metrics
    arts = {a.path for a in client.list_artifacts(seg.info.run_id)}
    assert {"eval", "overlays", "lucid_dream"} <= arts, arts
