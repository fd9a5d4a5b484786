"""Pre-emption by signal, as SLURM does it: SIGTERM to ``torchrun`` (which forwards it to its
workers; what ``launch/slurm/train.sbatch`` turns SLURM's warning signal into), or SIGUSR1 sent
straight to the training processes (``srun --signal``), while a 2-rank run is between
checkpoints. Both ranks stop after the same step, that stop writes its own checkpoint, the same
command resumes from it, and the final state is bit-identical to an uninterrupted run.

The signal's moment is fixed by ``STCNN_FAULT=hold:step=3:dir=D`` (:class:`fault_hook.HoldHook`):
after step 3 the ranks publish their pids and hold until the signal has reached them (their stop
hook recorded it); the signal is then seen at step 4's stop check, so the run must stop after
step 4, two steps before its end and far from a periodic checkpoint (``checkpoint.every=100``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from faultlib import FAULT_HOOK, PREEMPT_RUN, fault_env, resumed_steps
from support.training import assert_runs_bit_identical, failure, summary, torchrun, torchrun_cmd

pytestmark = pytest.mark.slow
LATE_SIGNAL_S = 5.0   # longer than the rest of the tiny run takes (steps 4-6 and the export)


def _wait_for(paths: list[Path], proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended (exit {proc.returncode}) before step 3:\n"
                                 f"{out[-3000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {paths} after {timeout} s")
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["TERM to torchrun", "USR1 to the workers"])
def test_signal_mid_interval_stops_both_ranks_with_a_checkpoint_and_resumes_bit_identically(
        how, uninterrupted_gan, train_lake, tmp_path):
    run_dir, hold = tmp_path / "run", tmp_path / "hold"
    cmd = torchrun_cmd("gan", train_lake, run_dir, *PREEMPT_RUN, FAULT_HOOK)
    proc = subprocess.Popen(cmd, env=fault_env(f"hold:step=3:dir={hold}"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = [hold / "rank_0.pid", hold / "rank_1.pid"]
    _wait_for(pids, proc)
    # the signal comes late on purpose: the ranks hold however long it takes (without the hold
    # they would run on past step 4 meanwhile, and this test fails)
    time.sleep(LATE_SIGNAL_S)
    if how == "TERM to torchrun":
        proc.send_signal(signal.SIGTERM)           # the agent forwards it to both workers
    else:
        for p in pids:
            os.kill(int(p.read_text()), signal.SIGUSR1)
    # each rank holds until its StopHook has recorded the signal, however long that takes
    out, err = proc.communicate(timeout=600)
    log = out + err
    # both ranks stopped after step 4, the step in which they saw the signal, and said so
    assert "stopping after step 4 (signal" in log, f"exit {proc.returncode}\n{log[-4000:]}"
    assert "[gan] step 5/6" not in log
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000004"], f"the stop did not write its own checkpoint: {ckpts}"
    for r in (0, 1):
        assert (run_dir / "checkpoints" / "step_00000004" / f"rank_{r:05d}.pt").is_file()
    assert not (run_dir / "weights.pt").exists(), "a stopped run must not export weights"
    # the same command resumes from the stop and finishes
    proc2 = torchrun("gan", train_lake, run_dir, *PREEMPT_RUN, FAULT_HOOK, env=fault_env(""))
    assert proc2.returncode == 0, failure(proc2)
    assert resumed_steps(proc2.stdout + proc2.stderr) == [4]
    s = summary(run_dir)
    assert s["completed"] and s["start_step"] == 4 and s["steps"] == 6
    assert s["resumed_from"].endswith("step_00000004")
    # bit-identical to the uninterrupted run: weights, engines (optimizers, schedulers), phase,
    # and each rank's RNG state and data position
    assert_runs_bit_identical(uninterrupted_gan, run_dir, step=6, ranks=2)


def test_preempted_and_resumed_run_is_one_mlflow_run_with_each_step_logged_once(
        server, train_lake, tmp_path):
    """Tracking on, in a real ``mlflow server``: the stopped attempt leaves its run KILLED, the
    resumed attempt reopens the same run (by the id in ``run_dir/tracking.json``) and ends it
    FINISHED; steps 1-4 come from the first attempt, 5-6 from the second, each once."""
    import json

    run_dir, hold = tmp_path / "run", tmp_path / "hold"
    tracked = ("tracking.experiment=stcnn-preempt", "tracking.system_metrics=false",
               "tracking.request_timeout_s=60")
    cmd = torchrun_cmd("gan", train_lake, run_dir, *PREEMPT_RUN, FAULT_HOOK, *tracked,
                       tracking=True)
    proc = subprocess.Popen(cmd, env=fault_env(f"hold:step=3:dir={hold}",
                                               MLFLOW_TRACKING_URI=server.uri),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    pids = [hold / "rank_0.pid", hold / "rank_1.pid"]
    _wait_for(pids, proc)
    for p in pids:
        os.kill(int(p.read_text()), signal.SIGUSR1)
    out, err = proc.communicate(timeout=600)
    assert "stopping after step 4 (signal" in out + err, f"exit {proc.returncode}\n{(out + err)[-4000:]}"
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    c = server.client()
    assert c.get_run(run_id).info.status == "KILLED"
    proc2 = torchrun("gan", train_lake, run_dir, *PREEMPT_RUN, FAULT_HOOK, *tracked,
                     tracking=True, env=fault_env("", MLFLOW_TRACKING_URI=server.uri))
    assert proc2.returncode == 0, failure(proc2)
    assert resumed_steps(proc2.stdout + proc2.stderr) == [4]
    assert summary(run_dir)["mlflow_run_id"] == run_id
    exp = c.get_experiment_by_name("stcnn-preempt")
    assert [r.info.run_id for r in c.search_runs([exp.experiment_id])] == [run_id]   # one run
    assert c.get_run(run_id).info.status == "FINISHED"
    for key in ("G/loss", "D/loss", "time/step_s"):
        steps = sorted(m.step for m in c.get_metric_history(run_id, key))
        assert steps == [1, 2, 3, 4, 5, 6], (key, steps)
