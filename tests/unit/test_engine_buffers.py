"""``Engine.sync_buffers``: every engine is built with a distributed context (an engine without one
is refused at construction, never a silent skip later); a one-process context has nothing to
sync; on a run of several ranks every rank ends with rank 0's buffers, a perturbed
``running_mean`` included. (Synced buffers on real training runs: ``tests/faults/test_detectors.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.core.dist import DistConfig, DistContext
from pipeline.train.engine import DDPEngine, Engine


def _stats(seed: int = 0) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(3)
    bn(torch.randn(8, 3, generator=torch.Generator().manual_seed(seed)))  # its own statistics
    return bn


def _engine(module: nn.Module, ctx) -> DDPEngine:
    return DDPEngine("bn", module, torch.optim.SGD(module.parameters(), lr=0.1), None, ctx,
                     DistConfig())


def test_an_engine_needs_a_distributed_context():
    with pytest.raises(TypeError, match="DistContext"):
        _engine(_stats(), None)
    with pytest.raises(TypeError):
        Engine("abstract", _stats(), None, None, DistContext(0, 1, 0, torch.device("cpu"), None))


def test_one_process_engine_has_nothing_to_sync():
    bn = _stats()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    _engine(bn, DistContext(0, 1, 0, torch.device("cpu"), None)).sync_buffers()
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    ctx = DistContext(rank, 2, rank, torch.device("cpu"), "gloo")
    bn = _stats()
    engine = _engine(bn, ctx)                 # DDP broadcasts rank 0's state once, here
    bn(torch.randn(8, 3, generator=torch.Generator().manual_seed(10 + rank)))  # plain forward
    if rank == 1:
        with torch.no_grad():
            bn.running_mean.add_(1e-3)
    engine.sync_buffers()
    same = []
    for name, b in bn.named_buffers():
        hi, lo = b.detach().clone(), b.detach().clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        same.append(f"{name}={torch.equal(hi, lo)}")
    Path(out, f"rank_{rank}.txt").write_text(" ".join(same))
    dist.destroy_process_group()


@pytest.mark.slow  # two processes importing torch
def test_engine_on_two_ranks_syncs_rank_0s_buffers(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for r in (0, 1):
        said = (tmp_path / f"rank_{r}.txt").read_text()
        assert said == "running_mean=True running_var=True num_batches_tracked=True", said
