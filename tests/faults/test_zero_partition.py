"""A truncated DeepSpeed ZeRO-2 partition file (``zero_pp_rank_1_*optim_states.pt``, which only
rank 1 reads) in the newest checkpoint of a 2-rank run: on resume every rank sees the damage
before any engine loads, all ranks fall back to the previous checkpoint together, and the
resumed run equals an uninterrupted one bit for bit (so neither rank resumed from another step).
"""

from __future__ import annotations

import os
import shutil

import pytest

from faultlib import Timer, record, resumed_steps
from support.training import assert_same_tensors, failure, summary, torchrun

pytestmark = pytest.mark.slow

DS = ("dist.engine=deepspeed", "dist.zero_stage=2", "steps=6", "checkpoint.every=2",
      "checkpoint.keep_last=10", "log.every=1")


def test_truncated_zero_partition_of_one_rank_falls_back_on_every_rank(train_lake, tmp_path):
    import torch

    run_dir = tmp_path / "zero2"
    with Timer() as t:
        torchrun("gan", train_lake, run_dir, *DS, check=True)
        ckpts = run_dir / "checkpoints"
        assert sorted(p.name for p in ckpts.glob("step_*")) == [
            "step_00000002", "step_00000004", "step_00000006"]
        reference = torch.load(run_dir / "weights.pt", weights_only=True)["models"]
        # as if the job had died after step 4: step 4 is the newest checkpoint
        shutil.rmtree(ckpts / "step_00000006")
        victims = sorted((ckpts / "step_00000004" / "engines" / "G").rglob(
            "zero_pp_rank_1_*optim_states.pt"))
        assert len(victims) == 1, sorted(p.name for p in (ckpts / "step_00000004").rglob("*"))
        victim = victims[0]
        os.truncate(victim, victim.stat().st_size // 2)

        proc = torchrun("gan", train_lake, run_dir, *DS, "dist.first_step_timeout_s=180")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, failure(proc)
    assert f"warning: checkpoint {ckpts / 'step_00000004'} cannot be resumed from" in log, log
    assert str(victim) in log and "truncated" in log, log[-6000:]
    assert resumed_steps(log) == [2]
    s = summary(run_dir)
    assert s["completed"] and s["start_step"] == 2
    # both ranks resumed from step 2: the run equals the uninterrupted one, bit for bit
    assert_same_tensors(reference, torch.load(run_dir / "weights.pt", weights_only=True)["models"],
                        "weights")
    record("zero-partition-truncated", fault="rank 1's ZeRO-2 optimizer partition of G in the "
           "newest checkpoint truncated to half", where="resume of a 2-rank DeepSpeed ZeRO-2 run",
           times=1, survived="every rank fell back to the previous checkpoint; result "
                             "bit-identical to an uninterrupted run", ok=True, seconds=t.seconds)
