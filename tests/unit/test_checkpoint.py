"""Checkpoints (:mod:`pipeline.train.checkpoint`): round trips, pruning, atomicity, world-size checks.

The fast tests run in one process (rank/world size given to the manager in a context without a
process group). The slow test runs two ranks under real ``torchrun`` (gloo, CPU), each with a DDP model
and a DeepSpeed ZeRO-1 engine. This file is also the script torchrun runs:
``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/unit/test_checkpoint.py OUT``.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core.dist import DistContext
from pipeline.train.checkpoint import (CheckpointError, CheckpointManager, WorldSizeMismatch,
                                 capture_rng_state, restore_rng_state)

REPO = Path(__file__).resolve().parents[2]


# ---- a small training setup: two optimizers, a scheduler, a grad scaler, dropout --------------

def _make(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 1))
    adam = torch.optim.Adam(model[0].parameters(), lr=1e-2)
    sgd = torch.optim.SGD(model[3].parameters(), lr=1e-2, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(adam, lambda s: 0.9 ** s)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=2)
    return model, adam, sgd, sched, scaler


def _batches(n: int, start: int = 0):
    g = torch.Generator().manual_seed(1234)
    xs = [(torch.randn(4, 6, generator=g), torch.randn(4, 1, generator=g))
          for _ in range(start + n)]
    return xs[start:]


def _train(parts, batches) -> list[float]:
    model, adam, sgd, sched, scaler = parts
    model.train()
    losses = []
    for x, y in batches:
        adam.zero_grad()
        sgd.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)  # dropout draws from torch's global RNG
        scaler.scale(loss).backward()
        scaler.step(adam)
        scaler.step(sgd)
        scaler.update()
        sched.step()
        losses.append(loss.item())
    return losses


def _shared(parts) -> dict:
    model, adam, sgd, sched, scaler = parts
    return {"model": model.state_dict(), "adam": adam.state_dict(), "sgd": sgd.state_dict(),
            "sched": sched.state_dict(), "scaler": scaler.state_dict()}


def _load_shared(parts, shared: dict) -> None:
    model, adam, sgd, sched, scaler = parts
    model.load_state_dict(shared["model"])
    adam.load_state_dict(shared["adam"])
    sgd.load_state_dict(shared["sgd"])
    sched.load_state_dict(shared["sched"])
    scaler.load_state_dict(shared["scaler"])


def _assert_equal_tree(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_equal_tree(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_equal_tree(u, v)
    else:
        assert a == b


# ---- fast tests ------------------------------------------------------------------------------

def test_round_trip_restores_state_and_training_bit_for_bit(tmp_path):
    orig = _make(0)
    _train(orig, _batches(3))
    ckpt = CheckpointManager(tmp_path / "ckpt", keep_last=3)
    saved = ckpt.save(3, _shared(orig), {"rng": capture_rng_state(), "data": {"position": 3}})
    assert saved == tmp_path / "ckpt" / "step_00000003" and ckpt.latest() == saved
    assert {p.name for p in saved.iterdir()} == {"shared.pt", "rank_00000.pt", "meta.json"}
    meta = json.loads((saved / "meta.json").read_text())
    assert meta["step"] == 3 and meta["world_size"] == 1 and meta["engines"] == []
    assert meta["files"] == ["rank_00000.pt", "shared.pt"]
    snapshot = copy.deepcopy(_shared(orig))
    expected = _train(orig, _batches(4, start=3))  # the original run goes on

    fresh = _make(99)  # different initial weights and RNG
    got = CheckpointManager(tmp_path / "ckpt").load()
    assert (got.path, got.step, got.world_size) == (saved, 3, 1)
    assert got.rank_state["data"] == {"position": 3}
    _load_shared(fresh, got.shared)
    restore_rng_state(got.rank_state["rng"])
    # load_state_dict restored bit-identical state ...
    _assert_equal_tree(got.shared, snapshot)
    _assert_equal_tree(_shared(fresh), snapshot)
    assert fresh[4].get_scale() == 2.0 ** 8 * 2  # scaler grew once (growth_interval=2, 3 steps)
    # ... and training goes on exactly as the original did
    assert _train(fresh, _batches(4, start=3)) == expected
    _assert_equal_tree(_shared(fresh), _shared(orig))


def test_saved_state_dicts_equal_the_originals(tmp_path):
    orig = _make(0)
    _train(orig, _batches(2))
    ckpt = CheckpointManager(tmp_path, keep_last=0)
    ckpt.save(2, _shared(orig))
    got = ckpt.load()
    _assert_equal_tree(got.shared, _shared(orig))
    assert got.rank_state is None  # no rank_state given


def test_rng_round_trip_through_weights_only_load(tmp_path):
    random.random(), np.random.normal(), torch.randn(1)  # gauss caches are whatever they are
    state = capture_rng_state()

    def draw():
        return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(),
                np.random.normal(), torch.rand(3), torch.randint(0, 10**6, (2,)))

    first = draw()
    ckpt = CheckpointManager(tmp_path)
    ckpt.save(1, {}, {"rng": state})
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    loaded = ckpt.load().rank_state["rng"]  # went through torch.load(weights_only=True)
    restore_rng_state(loaded)
    second = draw()
    assert first[:4] == second[:4]
    assert torch.equal(first[4], second[4]) and torch.equal(first[5], second[5])
    restore_rng_state(state)  # the in-memory dict works too
    assert draw()[:4] == first[:4]


def test_keep_last(tmp_path):
    ckpt = CheckpointManager(tmp_path / "run", keep_last=2)
    for step in (10, 20, 30, 40, 50):
        ckpt.save(step, {"w": torch.full((2,), float(step))})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_00000040",
                                                                    "step_00000050"]
    assert ckpt.list() == [tmp_path / "run" / "step_00000040", tmp_path / "run" / "step_00000050"]
    assert ckpt.latest() == tmp_path / "run" / "step_00000050"
    assert ckpt.load().shared["w"].tolist() == [50.0, 50.0]

    keep_all = CheckpointManager(tmp_path / "all", keep_last=0)
    for step in range(4):
        keep_all.save(step, {})
    assert len(keep_all.list()) == 4


def test_incomplete_folders_are_ignored_and_tmps_cleaned(tmp_path):
    ckpt = CheckpointManager(tmp_path, keep_last=5)
    ckpt.save(1, {"w": torch.ones(2)})
    stale = tmp_path / ".tmp_step_00000009"  # a crashed save of a later step
    stale.mkdir()
    (stale / "shared.pt").write_bytes(b"half")
    no_meta = tmp_path / "step_00000007"  # renamed by hand, or not ours: no meta.json
    no_meta.mkdir()
    torch.save({"w": torch.zeros(2)}, no_meta / "shared.pt")
    assert ckpt.latest() == tmp_path / "step_00000001"
    assert ckpt.list() == [tmp_path / "step_00000001"]
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        ckpt.load(no_meta)
    ckpt.save(2, {"w": 2 * torch.ones(2)})
    assert not stale.exists()  # cleaned by the next save
    assert no_meta.exists()  # never touched: it may not be ours
    assert [p.name for p in ckpt.list()] == ["step_00000001", "step_00000002"]


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path):
    ckpt = CheckpointManager(tmp_path, keep_last=1)
    ckpt.save(1, {"w": torch.arange(3.0)}, {"pos": 1})
    with pytest.raises(CheckpointError, match="could not write .*shared.pt"):
        ckpt.save(2, {"w": torch.zeros(3), "bad": lambda: 0})  # lambdas cannot be pickled
    assert ckpt.latest() == tmp_path / "step_00000001"
    got = ckpt.load()
    assert got.step == 1 and got.shared["w"].tolist() == [0.0, 1.0, 2.0]
    assert got.rank_state == {"pos": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]  # no temp left


def test_saving_an_existing_step_replaces_it(tmp_path):
    ckpt = CheckpointManager(tmp_path, keep_last=3)
    ckpt.save(3, {"v": torch.tensor(1)})
    ckpt.save(3, {"v": torch.tensor(2)})  # e.g. resumed from an earlier step and saved again
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000003"]
    assert ckpt.load().shared["v"].item() == 2


def _no_group(rank: int, world_size: int) -> DistContext:
    """Rank ``rank`` of ``world_size`` without a process group: no barriers, no all-reduce."""
    return DistContext(rank, world_size, 0, torch.device("cpu"), None)


def test_world_size_mismatch(tmp_path):
    r0 = CheckpointManager(tmp_path, ctx=_no_group(0, 2))
    r1 = CheckpointManager(tmp_path, ctx=_no_group(1, 2))
    assert (r1.rank, r1.world_size) == (1, 2)
    # rank 0 alone cannot finalise: rank 1's file is missing
    with pytest.raises(CheckpointError, match="rank_00001.pt"):
        r0.save(5, {"w": torch.ones(2)}, {"pos": 0})
    assert r0.latest() is None
    # without a process group: rank 1 writes its part first, rank 0 finalises
    r1.save(5, {"ignored": torch.zeros(1)}, {"pos": 11})
    assert r0.latest() is None
    path = r0.save(5, {"w": torch.ones(2)}, {"pos": 10})
    assert r0.latest() == path and json.loads((path / "meta.json").read_text())["world_size"] == 2
    assert r1.load().rank_state == {"pos": 11} and r0.load().rank_state == {"pos": 10}

    single = CheckpointManager(tmp_path)  # world size 1 (no process group)
    with pytest.raises(WorldSizeMismatch) as info:
        single.load()
    msg = str(info.value)
    assert str(path) in msg and "2 ranks" in msg and "has 1" in msg
    assert "allow_world_size_change" in msg and "nproc_per_node" in msg and "init_from" in msg
    assert isinstance(info.value, CheckpointError)
    got = single.load(allow_world_size_change=True)
    assert got.world_size == 2 and got.rank_state is None
    assert torch.equal(got.shared["w"], torch.ones(2))


def test_corrupt_shared_file(tmp_path):
    ckpt = CheckpointManager(tmp_path, keep_last=3)
    ckpt.save(1, {"w": torch.randn(64)})
    last = ckpt.save(2, {"w": torch.randn(64)})
    shared = last / "shared.pt"
    shared.write_bytes(shared.read_bytes()[: shared.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError) as info:
        ckpt.load()
    msg = str(info.value)
    assert str(shared) in msg and "Delete the checkpoint folder" in msg
    assert str(tmp_path / "step_00000001") in msg  # the fallback


def test_load_without_checkpoint_and_bad_arguments(tmp_path):
    ckpt = CheckpointManager(tmp_path / "nothing")
    assert ckpt.latest() is None and ckpt.list() == []
    with pytest.raises(CheckpointError, match="nothing"):
        ckpt.load()
    with pytest.raises(ValueError):
        ckpt.save(-1, {})
    with pytest.raises(ValueError):
        CheckpointManager(tmp_path, ctx=_no_group(2, 2))
    with pytest.raises(ValueError):
        ckpt.save(1, {}, engines={"../g": object()})


# ---- two ranks under torchrun: DDP + a DeepSpeed ZeRO-1 engine -------------------------------

DS_CONFIG = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 1},
             "optimizer": {"type": "Adam", "params": {"lr": 1e-2, "torch_adam": True}}}


def _rank_main(out_dir: str) -> None:
    import deepspeed
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def engine(seed):
        torch.manual_seed(seed)
        net = nn.Linear(4, 3)
        eng, *_ = deepspeed.initialize(model=net, model_parameters=net.parameters(),
                                       config=DS_CONFIG)
        return eng

    def ddp(seed):
        torch.manual_seed(seed)
        model = DDP(nn.Linear(3, 2))
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(eng, model, opt, i):
        g = torch.Generator().manual_seed(100 * i + rank)  # different data on each rank
        x = torch.randn(1, 4, generator=g)
        loss = eng(x).square().sum()
        eng.backward(loss)
        eng.step()
        opt.zero_grad()
        model(torch.randn(2, 3, generator=g)).sum().backward()
        opt.step()

    ckpt = CheckpointManager(out_dir + "/ckpt", keep_last=1)
    eng, (model, opt) = engine(0), ddp(0)
    step(eng, model, opt, 0)
    ckpt.save(1, {"model": model.module.state_dict(), "opt": opt.state_dict()},
              {"rng": capture_rng_state(), "data": {"position": 1, "rank": rank}},
              engines={"g": eng})
    step(eng, model, opt, 1)
    torch.manual_seed(1000 + rank)  # the ranks' RNG streams differ
    path = ckpt.save(2, {"model": model.module.state_dict(), "opt": opt.state_dict()},
                     {"rng": capture_rng_state(), "data": {"position": 2, "rank": rank}},
                     engines={"g": eng})
    after_save_draw = torch.rand(3)
    saved_weights = [p.detach().clone() for p in eng.module.parameters()]
    # a save that fails on one rank raises on every rank (no hang) and changes nothing
    try:
        ckpt.save(3, {"model": model.module.state_dict()},
                  {"bad": (lambda: 0) if rank == 1 else None}, engines={"g": eng})
        failed_save = "no error"
    except CheckpointError as e:
        failed_save = str(e)
    latest_after_failure = str(ckpt.latest())
    step(eng, model, opt, 2)  # the reference run goes on one step

    eng2, (model2, opt2) = engine(1), ddp(1)  # fresh, different weights
    got = CheckpointManager(out_dir + "/ckpt").load(engines={"g": eng2})
    model2.module.load_state_dict(got.shared["model"])
    opt2.load_state_dict(got.shared["opt"])
    restore_rng_state(got.rank_state["rng"])
    result = {
        "rank": rank, "world": world, "path": str(path), "loaded": str(got.path),
        "step": got.step, "data": got.rank_state["data"],
        "rng_equal": torch.equal(torch.rand(3), after_save_draw),
        "engine_weights_equal": all(torch.equal(a, b) for a, b in
                                    zip(saved_weights, eng2.module.parameters())),
    }
    step(eng2, model2, opt2, 2)  # same step from the restored state: same result (Adam moments)
    result["engine_continue_equal"] = all(torch.equal(a, b) for a, b in
                                          zip(eng.module.parameters(), eng2.module.parameters()))
    result["ddp_continue_equal"] = all(torch.equal(a, b) for a, b in
                                       zip(model.parameters(), model2.parameters()))
    result["failed_save"], result["latest_after_failure"] = failed_save, latest_after_failure
    result["listing"] = sorted(p.name for p in Path(out_dir, "ckpt").iterdir())
    result["files"] = got.meta["files"]
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_torchrun_two_ranks_ddp_and_deepspeed(tmp_path):
    import deepspeed  # noqa: F401  (a dependency: fail here, not in the ranks, without it)
    from support import launcher, run

    proc = run(launcher(2) + [str(Path(__file__).resolve()), str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"

    res = {r: json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)}
    final = str(tmp_path / "ckpt" / "step_00000002")
    for r in (0, 1):
        got = res[r]
        assert got["world"] == 2 and got["path"] == final and got["loaded"] == final
        assert got["step"] == 2 and got["data"] == {"position": 2, "rank": r}
        assert got["rng_equal"] and got["engine_weights_equal"]
        assert got["engine_continue_equal"] and got["ddp_continue_equal"]
        assert got["listing"] == ["step_00000002"]  # keep_last=1 pruned step 1, no temps left
    assert res[0]["failed_save"].endswith("another rank failed (see its log)")
    assert "could not write" in res[1]["failed_save"] and "rank_00001.pt" in res[1]["failed_save"]
    assert res[0]["latest_after_failure"] == res[1]["latest_after_failure"] == final
    files = res[0]["files"]
    assert {"shared.pt", "rank_00000.pt", "rank_00001.pt", "engines/g/latest",
            "engines/g/state/mp_rank_00_model_states.pt",
            "engines/g/state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
            "engines/g/state/zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= set(files)


if __name__ == "__main__":
    _rank_main(sys.argv[1])
