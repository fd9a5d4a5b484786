"""The detectors shown to detect: ``ReplicaCheckHook`` (``dist.check_replicas_every``) stops a
2-rank run whose rank 1 silently holds other weights, naming the step and the tensor."""

from __future__ import annotations

import pytest

from faultlib import FAULT_HOOK, fault_env
from support.training import failure, torchrun

pytestmark = pytest.mark.slow


def test_replica_check_catches_a_perturbed_rank(train_lake, tmp_path):
    run_dir = tmp_path / "perturbed"
    proc = torchrun("gan", train_lake, run_dir, "steps=5", "dist.check_replicas_every=1",
                    FAULT_HOOK, env=fault_env("perturb:rank=1:step=3"))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, failure(proc)
    assert "STCNN_FAULT: rank 1 perturbed G." in log, log[-3000:]
    # caught at the first check after the perturbation, with the tensor named
    assert "ranks diverged after step 3" in log, log[-3000:]
    name = log.split("STCNN_FAULT: rank 1 perturbed ")[1].split(" before")[0]
    assert f"{name} (weight)" in log
    assert "ranks diverged after step 2" not in log
