"""The SLURM scripts under a real SLURM: a private single-host cluster (``slurm_cluster.py``: own
munged, slurmctld and two slurmds as the virtual nodes n1 and n2 on 127.0.0.1) runs
``preprocess.sbatch`` as a 3-task array job, whose lake must equal a local run's byte for byte,
and over the real DAVIS-2016 at 240p as a 64-task array (all tasks at once on 2 cores) three of
whose tasks are killed and then re-run by their ids (same lake), and ``train.sbatch`` as a
2-node job (one srun task per node, torchrun with one rank on each, meeting at a c10d
rendezvous) and as a 1-node job with two ranks.

Skips, naming the fix, when ``slurm-wlm``/``munge`` are not installed
(``apt-get install -y slurm-wlm munge``), when not run as root (slurmd must be root to launch
jobs), or when the cluster cannot start here (the reason carries the daemons' logs); the
64-task array also when the real DAVIS-2016 240p is not there."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import free_port
from support.slurm_cluster import (clean_env, job_env, outputs, oversubscribed, sbatch,
                                   wait_until_ended)
from support.lakes import lake_files

REPO = Path(__file__).resolve().parents[2]
PREPROCESS = "launch/slurm/preprocess.sbatch"
TRAIN = "launch/slurm/train.sbatch"

pytestmark = pytest.mark.slow   # the `slurm` fixture (conftest.py) skips where it cannot run


def local_lake(args: list[str], out: Path) -> dict[str, bytes]:
    """The lake of one local, uninterrupted ``launch/preprocess.py *args --out out``."""
    local = subprocess.run([sys.executable, "launch/preprocess.py", *args, "--out", str(out),
                            "--no-progress"],
                           cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=240)
    assert local.returncode == 0, local.stdout + local.stderr
    return lake_files(out)


def file_states(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root``, temporary files included."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_preprocess_array_job_gives_the_lake_of_a_local_run(slurm, tmp_path):
    from pipeline.synthetic import SyntheticSpec, write_dataset

    src = write_dataset("davis2016", tmp_path / "src",
                        SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=8, seed=3))
    args = ["davis2016", "--src", str(src), "--shard-max-count", "3"]
    logs = tmp_path / "logs"
    logs.mkdir()
    # the script's header asks for 8 CPUs and 16G; a virtual node here has a share of this host
    r = sbatch(slurm, "--array=0-2", "--cpus-per-task=1", "--mem=200M",
               f"--output={logs}/%A_%a.out", PREPROCESS, *args, "--out", str(tmp_path / "array"),
               env=job_env(slurm, sys.executable), timeout=240)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{outputs(logs)}\n{slurm.logs()}"
    job_id = r.stdout.strip().split(";")[0]
    outs = sorted(logs.glob(f"{job_id}_*.out"))
    assert [p.name for p in outs] == [f"{job_id}_{i}.out" for i in range(3)], outputs(logs)
    for i, p in enumerate(outs):
        text = p.read_text()
        assert f"task {i}/3:" in text and "Traceback" not in text, outputs(logs)
        assert sum(map(int, re.findall(r"(\d+) shard\(s\) written", text))) > 0, outputs(logs)

    expected = local_lake(args, tmp_path / "local")
    assert len([k for k in expected if k.endswith(".tar")]) >= 3     # every task wrote a shard
    assert any(k.endswith("catalog.parquet") for k in expected)
    got = lake_files(tmp_path / "array")
    assert sorted(got) == sorted(expected)
    assert [k for k in expected if got[k] != expected[k]] == []


@pytest.fixture(scope="module")
def davis_240p() -> Path:
    """The real DAVIS-2016 at 240p, in its official layout (``../shared/data/DAVIS-2016-240p/DAVIS``
    or ``$STCNN_SHARED_DAVIS_240P``); skips when it is not there."""
    env = os.environ.get("STCNN_SHARED_DAVIS_240P")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "DAVIS-2016-240p"
                                             / "DAVIS"]:
        if (c / "JPEGImages" / "480p").is_dir() and (c / "ImageSets" / "480p").is_dir():
            return c
    pytest.skip("real DAVIS-2016 240p not found (../shared/data/DAVIS-2016-240p/DAVIS or "
                "$STCNN_SHARED_DAVIS_240P)")


def test_rerun_of_killed_array_tasks_by_id_gives_the_lake_of_a_local_run(slurm, davis_240p,
                                                                          tmp_path):
    """Real DAVIS-2016 (240p, train and val) as ``--array=0-63`` on two 1-CPU nodes that take 32
    tasks each (all 64 at once, oversubscribing the cores); tasks 5, 33 and 60 killed (scancel)
    while writing their first shard. The re-run ``--array=5,33,60`` without ``--num-tasks``
    fails with the fix and leaves the lake as it was; with ``--num-tasks 64`` it writes exactly
    their shards: the lake of one local run, byte for byte."""
    tasks, victims = 64, (5, 33, 60)
    args = ["davis2016", "--src", str(davis_240p), "--split", "train", "val",
            "--clip-stride", "8", "--shard-max-count", "2"]   # 124 and 68 shards of 2 clips
    lake, logs = tmp_path / "array", tmp_path / "logs"
    logs.mkdir()
    submit = ["--cpus-per-task=1", "--mem=200M", f"--output={logs}/%A_%a.out", PREPROCESS, *args,
              "--out", str(lake)]
    train = lake / "davis2016" / "train"
    with oversubscribed(slurm, jobs_per_cpu=tasks // len(slurm.nodes)):
        # 14 tar members per shard, 0.1 s each: a shard is ~1.4 s in the writing, time to kill
        r = sbatch(slurm, f"--array=0-{tasks - 1}", *submit,
                   env=job_env(slurm, sys.executable, STCNN_PREPROCESS_THROTTLE="0.1"),
                   timeout=30, wait=False)
        assert r.returncode == 0, r.stdout + r.stderr
        job = r.stdout.strip().split(";")[0]
        alive, deadline = set(victims), time.monotonic() + 240
        while alive:                               # each victim killed in its first shard
            for v in sorted(alive):
                assert not (train / f"{v:05d}_stats.json").exists(), f"task {v} ended first"
                if list(train.glob(f".{v:05d}.tar.*.tmp")):
                    assert slurm.run("scancel", f"{job}_{v}").returncode == 0
                    alive.discard(v)
            assert time.monotonic() < deadline, f"tasks {alive} did not start:\n{outputs(logs)}"
            time.sleep(0.02)
        wait_until_ended(slurm, job, timeout=400)
    assert len(list(logs.glob(f"{job}_*.out"))) == tasks
    for split in ("train", "val"):
        set_dir = lake / "davis2016" / split
        n_shards = json.loads((set_dir / "manifest.json").read_text())["n_shards"]
        assert n_shards >= tasks
        done = sorted(int(p.name[:5]) for p in set_dir.glob("*_stats.json"))
        assert done == [i for i in range(n_shards) if i % tasks not in victims], outputs(logs)
    assert not list(lake.rglob("catalog.parquet"))
    assert len(list(train.glob(".*.tar.*.tmp"))) == len(victims)  # killed mid-shard: temp files

    ids = f"--array={','.join(map(str, victims))}"
    before = file_states(lake)
    r = sbatch(slurm, ids, *submit, env=job_env(slurm, sys.executable), timeout=90)
    assert r.returncode != 0, outputs(logs)
    rerun = r.stdout.strip().split(";")[0]
    for v in victims:
        text = (logs / f"{rerun}_{v}.out").read_text()
        assert ("stcnn-preprocess: error: " in text and "pass --num-tasks N, the size of the array"
                in text and "Traceback" not in text), text
    assert file_states(lake) == before          # nothing written, no temp file removed

    r = sbatch(slurm, ids, *submit, "--num-tasks", str(tasks), env=job_env(slurm, sys.executable),
               timeout=120)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{outputs(logs)}"
    rerun = r.stdout.strip().split(";")[0]
    for v in victims:
        text = (logs / f"{rerun}_{v}.out").read_text()
        assert len(re.findall(rf"task {v}/{tasks}: [1-9]\d* shard\(s\) written, 0 already "
                              r"finished", text)) == 2, text
    expected = local_lake(args, tmp_path / "local")
    got = lake_files(lake)
    assert sorted(got) == sorted(expected)     # the killed tasks' temporary files are gone too
    assert [k for k in expected if got[k] != expected[k]] == []


@pytest.mark.parametrize("nodes, ranks_per_node", [(2, 1), (1, 2)],
                         ids=["2 nodes x 1 rank", "1 node x 2 ranks"])
def test_train_job_runs_to_completion(slurm, train_lake, tmp_path, nodes, ranks_per_node):
    """train.sbatch as submitted on a cluster: one srun task per node, each a torchrun with
    ``ranks_per_node`` CPU ranks (gloo), the nodes meeting at the c10d rendezvous. The virtual
    nodes' names do not resolve, so the rendezvous host is given (STCNN_RDZV_HOST)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    run_dir = tmp_path / "run"
    env = job_env(slurm, sys.executable, GPUS_PER_NODE=str(ranks_per_node), STCNN_RDZV_HOST="127.0.0.1",
                  STCNN_RDZV_PORT=str(free_port()))
    # the header asks for 8 GPUs and 64 CPUs per node: a CPU-only cluster needs neither
    r = sbatch(slurm, f"--nodes={nodes}", "--ntasks-per-node=1", "--cpus-per-task=1",
               "--gpus-per-node=0", "--time=10:00", f"--output={logs}/%j.out",
               TRAIN, "launch/pretrain_ssb.py", "--config", "configs/tiny/pretrain_ssb.yaml",
               f"data.lake={train_lake}", f"run_dir={run_dir}", "steps=3",
               "tracking.enabled=false", env=env, timeout=300)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{outputs(logs)}\n{slurm.logs()}"
    out = outputs(logs)
    assert f"{nodes} node(s) x {ranks_per_node} rank(s), rendezvous 127.0.0.1:" in out, out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is True and summary["steps"] == 3, summary
    assert summary["world_size"] == 2, summary
