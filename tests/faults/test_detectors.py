"""The detectors shown to detect: ``ReplicaCheckHook`` (``dist.check_replicas_every``) stops a
2-rank run whose rank 1 silently holds other weights or other BatchNorm statistics, naming the
step and the tensor; without the per-step buffer sync (``Engine.sync_buffers``) the ranks'
statistics drift apart, and with it they stay bit-identical."""

from __future__ import annotations

import pytest
import torch

from faultlib import FAULT_HOOK, fault_env
from support.training import assert_same_tensors, failure, summary, torchrun

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


def test_replica_check_catches_a_perturbed_running_mean(train_lake, tmp_path):
    proc = torchrun("gan", train_lake, tmp_path / "run", "steps=4", "dist.check_replicas_every=1",
                    FAULT_HOOK, env=fault_env("perturb_buffer:rank=1:step=2"))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, failure(proc)
    assert "STCNN_FAULT: rank 1 perturbed " in log, log[-3000:]
    name = log.split("STCNN_FAULT: rank 1 perturbed ")[1].split(" after")[0]
    assert name.endswith("running_mean"), name
    # caught at the check of the same step, the buffer named
    assert "ranks diverged after step 2" in log, log[-3000:]
    assert f"{name} (buffer)" in log, log[-3000:]
    assert "ranks diverged after step 1" not in log


def _buffers(folder) -> list[dict]:
    return [torch.load(folder / f"rank_{r}.pt") for r in (0, 1)]


def _differing(a: dict, b: dict) -> list[str]:
    return [f"{e}.{k}" for e in a for k in a[e] if not torch.equal(a[e][k], b[e][k])]


def test_without_the_buffer_sync_statistics_diverge_and_the_check_says_so(train_lake, tmp_path):
    # the check stops the run at the first step, naming BatchNorm buffers only
    proc = torchrun("gan", train_lake, tmp_path / "checked", "steps=3",
                    "dist.check_replicas_every=1", FAULT_HOOK,
                    env=fault_env("skip_buffer_sync"))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, failure(proc)
    assert "ranks diverged after step 1" in log, log[-3000:]
    assert "running_mean (buffer)" in log and "(weight)" not in log and "(grad)" not in log, \
        log[-3000:]
    # unchecked, each rank ends with the statistics of its own batches
    dump = tmp_path / "buffers"
    proc = torchrun("gan", train_lake, tmp_path / "unchecked", "steps=2", FAULT_HOOK,
                    env=fault_env(f"skip_buffer_sync:dir={dump}"))
    assert proc.returncode == 0, failure(proc)
    bad = _differing(*_buffers(dump))
    assert any(k.endswith("running_mean") for k in bad), bad


def test_with_the_buffer_sync_both_ranks_hold_identical_buffers(train_lake, tmp_path):
    dump, run_dir = tmp_path / "buffers", tmp_path / "run"
    proc = torchrun("gan", train_lake, run_dir, "steps=3", "dist.check_replicas_every=1",
                    FAULT_HOOK, env=fault_env(f"dump_buffers:dir={dump}"))
    assert proc.returncode == 0, failure(proc)
    assert summary(run_dir)["last_metrics"]["dist/replica_mismatch"] == 0.0
    rank0, rank1 = _buffers(dump)
    means = [k for e in rank0 for k in rank0[e] if k.endswith("running_mean")]
    assert means, "no BatchNorm statistics in the run's engines"
    assert_same_tensors(rank0, rank1)
