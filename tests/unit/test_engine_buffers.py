"""``Engine.sync_buffers`` of an engine without a distributed context: a one-process engine has
nothing to sync; on a run of several ranks it is an error, never a silent skip. (Synced buffers
on real 2-rank runs: ``tests/faults/test_detectors.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.core.dist import Engine


class _NoContext(Engine):
    def __init__(self, module: nn.Module):
        self.name, self.module = "bare", module


def _stats() -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(3)
    bn(torch.randn(8, 3))                      # running statistics of its own batch
    return bn


def test_one_process_engine_without_context_has_nothing_to_sync():
    bn = _stats()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    _NoContext(bn).sync_buffers()
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        _NoContext(_stats()).sync_buffers()
        said = "skipped"
    except RuntimeError as e:
        said = str(e)
    Path(out, f"rank_{rank}.txt").write_text(said)
    dist.destroy_process_group()


@pytest.mark.slow  # two processes importing torch
def test_engine_without_context_on_two_ranks_refuses_to_skip(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for r in (0, 1):
        said = (tmp_path / f"rank_{r}.txt").read_text()
        assert "no distributed context" in said and "2 ranks" in said, said
