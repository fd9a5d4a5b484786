"""A training process SIGKILLed in the middle of writing a checkpoint (the save slowed down on
purpose, so that the kill lands inside it): the half-written checkpoint is never taken for a
finished one, the same command resumes from the previous checkpoint, and the result is
bit-identical to an uninterrupted run. (Other tests crash a save with an exception, which runs
the cleanup; a kill runs nothing.)"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from faultlib import REPO, clean_env, resumed_steps
from support.training import (assert_same_tensors, failure, last_checkpoint_state, load_state,
                              summary, torchrun_cmd)

pytestmark = pytest.mark.slow
COMMON = ("steps=6", "checkpoint.every=2")

# sitecustomize of the killed run: the save of step 4 writes its shared file, says so, sleeps
SLOW_SAVE = '''
import os, time
import pipeline.train.checkpoint.manager as m
_save = m.save_torch
def save_torch(path, obj):
    _save(path, obj)
    if "00000004" in str(path.parent) and not os.path.exists(os.environ["STCNN_SAVE_MARKER"]):
        open(os.environ["STCNN_SAVE_MARKER"], "w").write(str(path))
        time.sleep(120)
m.save_torch = save_torch
'''


def _cmd(train_lake, run_dir):
    """One process, plain ``python`` (tracking off): the process the test kills."""
    return torchrun_cmd("gan", train_lake, run_dir, *COMMON, nproc=1, python_if_one=True)


def test_sigkill_inside_a_checkpoint_save_loses_only_that_checkpoint(train_lake, tmp_path):
    ref = tmp_path / "uninterrupted"
    proc = subprocess.run(_cmd(train_lake, ref), env=clean_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, failure(proc)

    hook, marker, run_dir = tmp_path / "hook", tmp_path / "saving", tmp_path / "killed"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_SAVE)
    env = clean_env(PYTHONPATH=f"{hook}:{REPO}", STCNN_SAVE_MARKER=str(marker))
    p = subprocess.Popen(_cmd(train_lake, run_dir), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert p.poll() is None, f"the run ended before the step-4 save:\n{p.communicate()}"
        assert time.monotonic() < deadline, "no step-4 save within 300 s"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    ckpts = run_dir / "checkpoints"
    assert sorted(d.name for d in ckpts.glob("step_*")) == ["step_00000002"], \
        "a half-written checkpoint looks finished"
    leftovers = [d.name for d in ckpts.iterdir() if d.name.startswith(".")]
    assert leftovers, "the kill should have left the save's temporary folder"
    # the same command: resumes from step 2, ignores (and clears) the half-written save
    again = subprocess.run(_cmd(train_lake, run_dir), env=clean_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, failure(again)
    assert resumed_steps(again.stdout + again.stderr) == [2]
    s = summary(run_dir)
    assert s["completed"] and s["start_step"] == 2
    assert_same_tensors(load_state(ref)["models"], load_state(run_dir)["models"], "weights")
    assert_same_tensors(last_checkpoint_state(ref)["engines"],
                        last_checkpoint_state(run_dir)["engines"], "engines")
    assert not [d for d in ckpts.iterdir() if d.name.startswith(".")], "temporary folder left"
