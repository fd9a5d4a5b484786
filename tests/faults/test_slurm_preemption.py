"""Pre-emption and the time-limit warning through ``launch/slurm/train.sbatch`` on a real SLURM
cluster (the private single-host cluster of ``support/slurm_cluster.py``: munged, slurmctld and
two slurmds as the nodes n1 and n2). A 2-node job (one torchrun per node, one rank each) is
signalled the way SLURM signals it while it is between checkpoints:

* **time limit**: ``scancel --batch --signal=USR1`` is what ``#SBATCH --signal=B:USR1@120``
  does before the time limit: SIGUSR1 to the batch shell only. The job must stop both ranks after
  the same step with a checkpoint of that step, requeue itself, and the requeued job (the same
  command) must resume there and finish.
* **pre-emption**: ``scancel --signal=TERM`` is what SLURM sends a pre-empted job's steps:
  SIGTERM to every process of the step (the node's task, torchrun, the ranks). The step must
  stop with its own checkpoint the same way, no node's task killed by the signal; submitting the
  same command again resumes it and finishes.

Either way the final weights, engines, phase and each rank's RNG/data state equal, bit for bit,
those of an uninterrupted run. The moment is fixed by ``STCNN_FAULT=hold:step=3:dir=D``
(``fault_hook.HoldHook``): after step 3 the ranks publish their pids and hold until the signal
has reached them (their stop hook recorded it); it is then seen at step 4's stop check (``checkpoint.every=100``, so
step 4 is no periodic checkpoint). The step-4 save is slowed to 8 s, longer than the cluster's
KillWait (5 s): a checkpoint only lands if nothing in the chain (batch shell, srun, the node's
task, torchrun) dies or lets SLURM kill the step while the ranks write it.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from faultlib import FAULT_HOOK, PREEMPT_RUN, fault_env, resumed_steps
from support import free_port
from support.slurm_cluster import SlurmCluster, job_env, outputs, sbatch
from pipeline.train.registry import by_name
from support.training import assert_runs_bit_identical, summary, tiny

pytestmark = pytest.mark.slow
TRAIN = "launch/slurm/train.sbatch"
SAVE_SECONDS = 8   # > KillWait=5 of the test cluster

# sitecustomize of the signalled job: each rank's save into the step-4 checkpoint takes 8 s more
SLOW_SAVE = f'''
import time
import pipeline.train.checkpoint.manager as m
_save = m.save_torch
def save_torch(path, obj):
    _save(path, obj)
    if "00000004" in str(path.parent):
        time.sleep({SAVE_SECONDS})
m.save_torch = save_torch
'''


def submit(slurm: SlurmCluster, lake: Path, run_dir: Path, logs: Path, fault: str,
           slow_save: Path | None = None) -> str:
    """train.sbatch on 2 nodes x 1 rank (CPU, gloo) with the fault hook; returns the job id.
    ``slow_save``: a folder for the sitecustomize that slows the step-4 save."""
    hook_env = fault_env(fault)
    path = hook_env["PYTHONPATH"]
    if slow_save is not None:
        slow_save.mkdir()
        (slow_save / "sitecustomize.py").write_text(SLOW_SAVE)
        path = os.pathsep.join([str(slow_save), path])
    env = job_env(slurm, sys.executable, GPUS_PER_NODE="1", STCNN_RDZV_HOST="127.0.0.1",
                  STCNN_RDZV_PORT=str(free_port()), STCNN_FAULT=hook_env["STCNN_FAULT"],
                  PYTHONPATH=path, PYTHONUNBUFFERED="1")
    r = sbatch(slurm, "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1",
               "--gpus-per-node=0", "--time=10:00", f"--output={logs}/%j.out",
               TRAIN, by_name("gan").launcher, "--config", str(tiny("gan")),
               f"data.lake={lake}", f"run_dir={run_dir}", "tracking.enabled=false", *PREEMPT_RUN,
               FAULT_HOOK, env=env, timeout=60, wait=False)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}"
    return r.stdout.strip().split(";")[0]


def job_state(slurm: SlurmCluster, job: str) -> str | None:
    """The job's state, or None once the controller has forgotten it (MinJobAge after its end)."""
    r = slurm.run("scontrol", "-o", "show", "job", job, timeout=20)
    if r.returncode != 0:
        return None
    for field in r.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


def wait_for_pids(slurm: SlurmCluster, job: str, hold: Path, logs: Path, timeout: float = 300):
    pids = [hold / "rank_0.pid", hold / "rank_1.pid"]
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in pids):
        state = job_state(slurm, job)
        if state not in ("PENDING", "CONFIGURING", "RUNNING"):
            raise AssertionError(f"job {job} is {state} before step 3:\n{outputs(logs)}\n"
                                 f"{slurm.logs()}")
        if time.monotonic() > deadline:
            slurm.run("scancel", job)
            raise AssertionError(f"no {pids} after {timeout} s:\n{outputs(logs)}")
        time.sleep(0.1)


def wait_until_gone(slurm: SlurmCluster, job: str, logs: Path, timeout: float = 300) -> list[str]:
    """Polls the job until the controller no longer knows it; returns the states seen, in
    order, without repeats."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        state = job_state(slurm, job)
        if state is None:
            return seen
        if not seen or seen[-1] != state:
            seen.append(state)
        if time.monotonic() > deadline:
            slurm.run("scancel", job)
            raise AssertionError(f"job {job} still {state} after {timeout} s (states: {seen}):\n"
                                 f"{outputs(logs)}\n{slurm.logs()}")
        time.sleep(0.2)


def held_job(slurm: SlurmCluster, lake: Path, tmp_path: Path) -> tuple[str, Path, Path, Path]:
    """A submitted job whose ranks hold after step 3 (step-4 save slowed); returns (job id,
    run_dir, hold folder, log folder) once both ranks hold."""
    run_dir, hold, logs = tmp_path / "run", tmp_path / "hold", tmp_path / "logs"
    logs.mkdir()
    job = submit(slurm, lake, run_dir, logs, f"hold:step=3:dir={hold}",
                 slow_save=tmp_path / "site")
    wait_for_pids(slurm, job, hold, logs)
    return job, run_dir, hold, logs


def assert_stopped_at_step_4(log: str, run_dir: Path) -> None:
    assert "stopping after step 4 (signal" in log, log
    for r in (0, 1):
        assert (run_dir / "checkpoints" / "step_00000004" / f"rank_{r:05d}.pt").is_file(), log


def test_time_limit_warning_checkpoints_requeues_and_resumes_bit_identically(
        slurm, train_lake, uninterrupted_gan, tmp_path):
    job, run_dir, hold, logs = held_job(slurm, train_lake, tmp_path)
    # what --signal=B:USR1@120 does 120 s before the time limit
    r = slurm.run("scancel", "--batch", "--signal=USR1", job)
    assert r.returncode == 0, r.stdout + r.stderr
    # the shell -> srun -> the step's processes: each rank holds until the signal reached it
    states = wait_until_gone(slurm, job, logs)
    log = outputs(logs, tail=10**6)
    assert "got SIGUSR1: stopping the training with a checkpoint" in log, log
    assert f"requeueing job {job}" in log, log
    # srun passed USR1 on to the step; torchrun ignored it, its workers stopped and exited 0,
    # and so did every node's task
    assert "forcing job termination" not in log and "death signal" not in log, log
    assert "srun: error" not in log, log
    assert_stopped_at_step_4(log, run_dir)
    # the requeued job (same id, same command, restart 1) resumed at step 4 and finished
    assert f"job {job} (restart 1)" in log, (states, log)
    assert resumed_steps(log) == [4], log
    s = summary(run_dir)
    assert s["completed"] and s["start_step"] == 4 and s["steps"] == 6, (s, log)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == \
        ["step_00000004", "step_00000006"]
    assert_runs_bit_identical(uninterrupted_gan, run_dir, step=6, ranks=2)


def test_preemption_sigterm_to_the_step_checkpoints_and_the_same_command_resumes(
        slurm, train_lake, uninterrupted_gan, tmp_path):
    job, run_dir, hold, logs = held_job(slurm, train_lake, tmp_path)
    # what a pre-emption sends: SIGTERM to the job's steps (not the batch shell)
    r = slurm.run("scancel", "--signal=TERM", job)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until_gone(slurm, job, logs)
    log = outputs(logs, tail=10**6)
    assert_stopped_at_step_4(log, run_dir)
    assert "got SIGTERM; torchrun stops the workers with a checkpoint" in log, log
    assert "forcing job termination" not in log, log
    # each node's torchrun got SIGTERM, passed it on and waited for its worker; no node's task
    # was killed by the signal (srun would say "task N: Terminated")
    assert log.count("Received 15 death signal, shutting down workers") == 2, log
    assert not re.search(r"task \d+: Terminated|Force Terminated", log), log
    assert not (run_dir / "weights.pt").exists(), "a stopped run must not export weights"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_00000004"]
    # SLURM would requeue a pre-empted job; here the same command is submitted again
    for p in hold.iterdir():
        p.unlink()
    logs2 = tmp_path / "logs2"
    logs2.mkdir()
    job2 = submit(slurm, train_lake, run_dir, logs2, f"hold:step=3:dir={hold}")
    wait_until_gone(slurm, job2, logs2)
    log2 = outputs(logs2, tail=10**6)
    assert resumed_steps(log2) == [4], log2
    s = summary(run_dir)
    assert s["completed"] and s["start_step"] == 4 and s["steps"] == 6, (s, log2)
    assert_runs_bit_identical(uninterrupted_gan, run_dir, step=6, ranks=2)
