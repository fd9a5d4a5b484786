"""Every training phase under real ``torchrun --nproc_per_node=2`` (gloo, CPU), as users launch
them: DDP replicas stay identical, DeepSpeed ZeRO-2 runs the GAN phase, a 2-rank run stopped
and resumed is bit-identical to an uninterrupted one, and a changed world size is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support import PortTaken, address_in_use, start_on_free_port
from support.training import (REPO, assert_same_tensors, last_checkpoint_state, load_state,
                              summary, tiny, torchrun)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_runs(train_lake, tmp_path_factory):
    """Uninterrupted 2-rank runs of 5 steps, checking replicas after every step."""
    root = tmp_path_factory.mktemp("ddp_full")
    out = {}
    for phase in ("gan", "segmentation", "alternating"):
        run_dir = root / phase
        torchrun(phase, train_lake, run_dir, "steps=5", "dist.check_replicas_every=1", check=True)
        out[phase] = run_dir
    return out


@pytest.mark.parametrize("phase", ["gan", "segmentation", "alternating"])
def test_each_phase_on_two_ranks_keeps_replicas_identical(phase, full_runs):
    s = summary(full_runs[phase])
    assert s["completed"] and s["steps"] == 5 and s["world_size"] == 2
    assert s["micro_size"] * 2 * s["accum"] == s["global_batch"]
    # ReplicaCheckHook compared every weight and gradient of every engine across the two ranks
    # after each step (it raises on a difference); the last check is in the metrics
    assert s["last_metrics"]["dist/replica_mismatch"] == 0.0
    assert (full_runs[phase] / "weights.pt").is_file()


@pytest.mark.parametrize("phase", ["gan", "alternating"])
def test_two_rank_resume_is_bit_identical(phase, full_runs, train_lake, tmp_path):
    run_dir = tmp_path / phase
    torchrun(phase, train_lake, run_dir, "steps=5", "checkpoint.stop_after=2", check=True)
    assert not (run_dir / "weights.pt").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_00000002"]
    torchrun(phase, train_lake, run_dir, "steps=5", check=True)
    s = summary(run_dir)
    assert s["start_step"] == 2 and s["completed"]
    assert_same_tensors(load_state(full_runs[phase])["models"], load_state(run_dir)["models"])
    assert_same_tensors(last_checkpoint_state(full_runs[phase])["engines"],
                        last_checkpoint_state(run_dir)["engines"])
    # per-rank RNG and data position were saved for both ranks
    last = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    for r in (0, 1):
        st = torch.load(last / f"rank_{r:05d}.pt", weights_only=True)["state"]
        assert st["data"]["epoch"] == 1 and st["data"]["batch"] == 2   # 5 batches, epochs of 3


def test_changed_world_size_is_refused(full_runs, train_lake, tmp_path):
    import shutil
    run_dir = tmp_path / "gan"
    shutil.copytree(full_runs["gan"], run_dir)
    proc = torchrun("gan", train_lake, run_dir, "steps=7", nproc=1)
    assert proc.returncode != 0
    assert "was written by 2 ranks" in proc.stderr and "allow_world_size_change" in proc.stderr


def test_deepspeed_zero2_gan_phase_and_resume(train_lake, tmp_path):
    """Two DeepSpeed engines (G and D) with ZeRO-2 under torchrun; D is frozen during G's
    backward (else ZeRO-2 stops with 'Gradient computed twice'); checkpoints one folder per
    engine; a resumed run continues from DeepSpeed's own state."""
    run_dir = tmp_path / "ds"
    ds = ["dist.engine=deepspeed", "dist.zero_stage=2"]
    torchrun("gan", train_lake, run_dir, "steps=4", *ds, "checkpoint.stop_after=2", check=True)
    ckpt = run_dir / "checkpoints" / "step_00000002"
    for engine in ("G", "D"):
        assert (ckpt / "engines" / engine / "state").is_dir()
    torchrun("gan", train_lake, run_dir, "steps=4", *ds, check=True)
    s = summary(run_dir)
    assert s["completed"] and s["start_step"] == 2
    w = load_state(run_dir)["models"]
    assert set(w) == {"G", "D"} and all(torch.isfinite(t.float()).all() for t in w["G"].values())


def _deepspeed_files(ckpt: Path) -> dict[str, dict]:
    """Every file DeepSpeed wrote for engines G and D in a checkpoint folder (module states, and
    per rank the ZeRO partitions of the fp32 weights and of Adam's moments), loaded."""
    out = {}
    for f in sorted((ckpt / "engines").rglob("*.pt")):
        out[str(f.relative_to(ckpt))] = torch.load(f, map_location="cpu", weights_only=False)
    return out


def _tensors(obj, prefix=""):
    """The tensors and numbers inside a (nested) DeepSpeed state, by path."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix, obj


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_zero_resume_matches_an_uninterrupted_run_tensor_for_tensor(stage, train_lake,
                                                                              tmp_path):
    """ZeRO-1/2, 2 ranks: stopped after step 2 and resumed to step 4 == 4 steps straight, for
    the weights and for every tensor DeepSpeed saved: the fp32 master partitions and Adam's
    exp_avg / exp_avg_sq of each rank's partition, and the step counts."""
    ds = ["dist.engine=deepspeed", f"dist.zero_stage={stage}", "steps=4",
          "checkpoint.every=100"]
    full, parts = tmp_path / "full", tmp_path / "parts"
    torchrun("gan", train_lake, full, *ds, check=True)
    torchrun("gan", train_lake, parts, *ds, "checkpoint.stop_after=2", check=True)
    torchrun("gan", train_lake, parts, *ds, check=True)
    assert summary(parts)["start_step"] == 2 and summary(parts)["completed"]
    assert_same_tensors(load_state(full)["models"], load_state(parts)["models"], "weights")
    a = _deepspeed_files(full / "checkpoints" / "step_00000004")
    b = _deepspeed_files(parts / "checkpoints" / "step_00000004")
    assert set(a) == set(b) and any("optim_states" in k for k in a), sorted(a)
    moments = 0
    for name in a:
        ta, tb = dict(_tensors(a[name])), dict(_tensors(b[name]))
        assert set(ta) == set(tb), name
        for path, x in ta.items():
            y = tb[path]
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, y), f"{name}{path} differs after the resume"
                moments += "exp_avg" in path
            elif "time" not in path:
                assert x == y, f"{name}{path}: {x} != {y}"
    assert moments > 0, "no Adam moments found in DeepSpeed's optimizer files"


def test_deepspeed_launcher_runs_the_gan_phase(train_lake, tmp_path):
    """``deepspeed --num_gpus 2 launch/pretrain_tcb.py ...`` (it appends --local_rank; on the CPU
    DeepSpeed's accelerator is the CPU one, over gloo) with ZeRO-1."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    run_dir = tmp_path / "dsl"

    def launch(port: int) -> subprocess.CompletedProcess:
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2",
               "--master_port", str(port), str(REPO / "launch" / "pretrain_tcb.py"),
               "--config", str(tiny("gan")), f"data.lake={train_lake}", f"run_dir={run_dir}",
               "steps=2", "tracking.enabled=false", "dist.engine=deepspeed", "dist.zero_stage=1"]
        proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True,
                              timeout=600)
        if proc.returncode and address_in_use(proc.stdout + proc.stderr):
            raise PortTaken(port)            # another process took it first: another port
        return proc

    proc = start_on_free_port(launch)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    s = summary(run_dir)
    assert s["completed"] and s["world_size"] == 2



