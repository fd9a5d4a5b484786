"""The SLURM scripts under a real SLURM: a private single-host cluster (``slurm_cluster.py``: own
munged, slurmctld and two slurmds as the virtual nodes n1 and n2 on 127.0.0.1) runs
``preprocess.sbatch`` as a 3-task array job, whose lake must equal a local run's byte for byte,
and as an 8-task array two of whose tasks are killed and then re-run by their ids (same lake),
and ``train.sbatch`` as a 2-node job (one srun task per node, torchrun with one rank on each,
meeting at a c10d rendezvous) and as a 1-node job with two ranks.

Skips, naming the fix, when ``slurm-wlm``/``munge`` are not installed
(``apt-get install -y slurm-wlm munge``), when not run as root (slurmd must be root to launch
jobs), or when the cluster cannot start here (the reason carries the daemons' logs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import free_port
from support.slurm_cluster import clean_env, job_env, outputs, sbatch, wait_until_ended
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


def test_rerun_of_killed_array_tasks_by_id_gives_the_lake_of_a_local_run(slurm, tmp_path):
    """``--array=0-7``, tasks 3 and 6 killed (scancel) while writing their first shard; the
    re-run ``--array=3,6`` without ``--num-tasks`` fails with the fix and leaves the lake as it
    was; with ``--num-tasks 8`` it writes exactly their shards: the lake of one local run."""
    from pipeline.synthetic import SyntheticSpec, write_dataset

    src = write_dataset("davis2016", tmp_path / "src",
                        SyntheticSpec(size=(64, 48), n_sequences=1, n_frames=8, seed=5))
    args = ["davis2016", "--src", str(src), "--split", "train", "val",
            "--shard-max-count", "1"]                    # 8 or more shards per split
    lake, logs = tmp_path / "array", tmp_path / "logs"
    logs.mkdir()
    submit = ["--cpus-per-task=1", "--mem=200M", f"--output={logs}/%A_%a.out", PREPROCESS, *args,
              "--out", str(lake)]
    victims = (3, 6)
    # 7 tar members per shard, 0.15 s each: a shard is ~1 s in the writing, time to kill a task
    r = sbatch(slurm, "--array=0-7", *submit,
               env=job_env(slurm, sys.executable, STCNN_PREPROCESS_THROTTLE="0.15"),
               timeout=30, wait=False)
    assert r.returncode == 0, r.stdout + r.stderr
    job = r.stdout.strip().split(";")[0]
    train = lake / "davis2016" / "train"
    for v in victims:
        deadline = time.monotonic() + 60
        while not list(train.glob(f".{v:05d}.tar.*.tmp")):   # task v is writing its first shard
            assert not (train / f"{v:05d}_stats.json").exists(), f"task {v} ended before the kill"
            assert time.monotonic() < deadline, f"task {v} did not start:\n{outputs(logs)}"
            time.sleep(0.02)
        assert slurm.run("scancel", f"{job}_{v}").returncode == 0
    wait_until_ended(slurm, job, timeout=90)
    for split in ("train", "val"):
        set_dir = lake / "davis2016" / split
        n_shards = json.loads((set_dir / "manifest.json").read_text())["n_shards"]
        assert n_shards >= 8
        done = sorted(int(p.name[:5]) for p in set_dir.glob("*_stats.json"))
        assert done == [i for i in range(n_shards) if i % 8 not in victims], outputs(logs)
    assert not list(lake.rglob("catalog.parquet"))
    assert len(list(train.glob(".*.tar.*.tmp"))) == 2         # killed mid-shard: temp files left

    ids = f"--array={','.join(map(str, victims))}"
    before = file_states(lake)
    r = sbatch(slurm, ids, *submit, env=job_env(slurm, sys.executable), timeout=60)
    assert r.returncode != 0, outputs(logs)
    rerun = r.stdout.strip().split(";")[0]
    for v in victims:
        text = (logs / f"{rerun}_{v}.out").read_text()
        assert ("stcnn-preprocess: error: " in text and "pass --num-tasks N, the size of the array"
                in text and "Traceback" not in text), text
    assert file_states(lake) == before          # nothing written, no temp file removed

    r = sbatch(slurm, ids, *submit, "--num-tasks", "8", env=job_env(slurm, sys.executable),
               timeout=60)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{outputs(logs)}"
    rerun = r.stdout.strip().split(";")[0]
    for v in victims:
        text = (logs / f"{rerun}_{v}.out").read_text()
        assert len(re.findall(rf"task {v}/8: [1-9]\d* shard\(s\) written, 0 already finished",
                              text)) == 2, text
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
