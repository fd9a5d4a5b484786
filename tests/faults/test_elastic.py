"""Elastic training: one rank of a 2-rank torchrun job is SIGKILLed mid-run; torchrun
(``--max-restarts``) restarts the worker group, which resumes from the last checkpoint by itself,
and the result is bit-identical to an uninterrupted run.

The kill is deterministic: ``$STCNN_FAULT=kill:rank=1:step=3:once=MARKER`` registers
:class:`fault_hook.FaultHook` (through the config's ``hooks:``), which SIGKILLs rank 1 after step 3 (after the step-2
checkpoint, before the step-4 one) unless MARKER exists, creating it first.
"""

from __future__ import annotations

import re

import pytest

from faultlib import FAULT_HOOK, Timer, fault_env, record, resumed_steps
from support.training import assert_runs_bit_identical, failure, summary, torchrun

COMMON = ("steps=6", "checkpoint.every=2")


def test_fault_spec_is_parsed_and_checked(tmp_path):
    from fault_hook import FaultHook

    assert FaultHook.from_env(0, {}) is None                 # not registered without the variable
    h = FaultHook.from_env(1, {"STCNN_FAULT": f"kill:rank=1:step=3:once={tmp_path}/a:b"})
    assert (h.rank, h.kill_rank, h.step, h.once) == (1, 1, 3, tmp_path / "a:b")
    for bad in ("boom", "kill:rank=1", "kill:rank=x:step=1", "kill:step=1:signal=9"):
        with pytest.raises(ValueError, match="STCNN_FAULT"):
            FaultHook.parse(bad, 0)


@pytest.mark.slow
def test_torchrun_restarts_a_killed_rank_and_the_run_is_bit_identical(train_lake, tmp_path):
    ref = tmp_path / "uninterrupted"
    proc = torchrun("gan", train_lake, ref, *COMMON)
    assert proc.returncode == 0, failure(proc)

    run_dir, marker = tmp_path / "elastic", tmp_path / "fault.marker"
    env = fault_env(f"kill:rank=1:step=3:once={marker}")
    with Timer() as t:
        proc = torchrun("gan", train_lake, run_dir, *COMMON, FAULT_HOOK,
                        launcher_args=("--max-restarts=2", "--monitor-interval=0.5"), env=env)
    assert proc.returncode == 0, failure(proc)
    log = proc.stdout + proc.stderr
    assert marker.is_file() and "STCNN_FAULT: killing rank 1" in log, log[-3000:]
    # torchrun saw rank 1 die of SIGKILL and restarted the group (exit 0 above: it did not give
    # up); the marker stops a second kill
    assert re.search(r"exitcode: -9\) local_rank: 1", proc.stderr), proc.stderr[-3000:]
    assert log.count("STCNN_FAULT: killing") == 1
    # the restarted attempt resumed from the step-2 checkpoint by itself and finished
    assert resumed_steps(log) == [2], log[-3000:]
    s = summary(run_dir)
    assert s["completed"] and s["steps"] == 6 and s["start_step"] == 2
    assert s["resumed_from"].endswith("step_00000002") and s["world_size"] == 2
    # bit-identical to the uninterrupted run: weights, models/optimizers/schedulers, and each
    # rank's data position and RNG state
    assert_runs_bit_identical(ref, run_dir, step=6, ranks=2)
    record("elastic-kill", fault="SIGKILL of rank 1 of 2 after step 3 (torchrun --max-restarts=2)",
           where="2-rank DDP training (GAN phase, gloo)", times=1,
           survived="run completed after 1 restart; weights + checkpoint bit-identical",
           ok=True, seconds=t.seconds)
