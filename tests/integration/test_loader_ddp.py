"""Two ranks under real ``torchrun`` (gloo, CPU), each with 2 DataLoader workers.

Checks what DDP training relies on: every rank gets exactly ``epoch_batches`` batches (else the
last all-reduce hangs), and the ranks read disjoint shards (so their samples are disjoint within
an epoch). Rank and world size come from torchrun's environment, as in users' runs.

This file is also the script torchrun runs: ``python -m torch.distributed.run --standalone
--nproc_per_node=2 tests/integration/test_loader_ddp.py SHARD_DIR OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EPOCH_BATCHES = 5
BATCH_SIZE = 2
NUM_WORKERS = 2


def _rank_main(shard_dir: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from pipeline.loading import loader as L
    from pipeline.loading.augment import AugmentConfig

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    loader = L.make_loader(shard_dir, batch_size=BATCH_SIZE, num_workers=NUM_WORKERS,
                           epoch_batches=EPOCH_BATCHES, seed=0, kind="clip",
                           augment=AugmentConfig(size=(24, 32), hflip=0.5))
    epochs = []
    for _ in range(2):
        keys, shards, n = [], [], 0
        for batch in loader:
            n += 1
            assert batch["frames"].shape[:2] == (BATCH_SIZE, 3)
            keys += batch["key"]
            shards += [m["shard"] for m in batch["meta"]]
        counts = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
        dist.all_gather(counts, torch.tensor([n]))  # would hang if a rank had fewer batches
        epochs.append({"batches": n, "keys": keys, "shards": shards,
                       "all_counts": [int(c) for c in counts]})
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": world, "env_rank": os.environ.get("RANK"),
        "dataset_rank": loader.dataset.rank, "dataset_world": loader.dataset.world_size,
        "corrupt": loader.stats.corrupt, "samples": loader.stats.samples, "epochs": epochs}))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_torchrun_two_ranks_disjoint_and_equal_length(tmp_path):
    from pipeline.loading import loader as L
    from support import launcher, run
    from support.lakes import keys_of, write_clip_set

    shard_dir = tmp_path / "davis2017" / "train"
    shards = [str(p) for p in write_clip_set(shard_dir, 8, per_shard=3, h=32, w=40)]
    out = tmp_path / "out"
    out.mkdir()
    proc = run(launcher(2) + [str(Path(__file__).resolve()), str(shard_dir), str(out)],
               cwd=tmp_path)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"

    res = {r: json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)}
    for r in (0, 1):
        assert res[r]["world"] == 2 and res[r]["env_rank"] == str(r)
        assert (res[r]["dataset_rank"], res[r]["dataset_world"]) == (r, 2)  # from torchrun's env
        assert res[r]["corrupt"] == 0
        assert res[r]["samples"] == 2 * EPOCH_BATCHES * BATCH_SIZE
    rank_shards = {r: set(L.split_by_rank(shards, r, 2)) for r in (0, 1)}
    rank_keys = {r: set().union(*(keys_of(p) for p in rank_shards[r])) for r in (0, 1)}
    assert not rank_shards[0] & rank_shards[1] and not rank_keys[0] & rank_keys[1]
    for e in range(2):
        ep = {r: res[r]["epochs"][e] for r in (0, 1)}
        for r in (0, 1):
            # exactly epoch_batches batches on every rank, and every rank saw the same counts
            assert ep[r]["batches"] == EPOCH_BATCHES
            assert ep[r]["all_counts"] == [EPOCH_BATCHES, EPOCH_BATCHES]
            assert len(ep[r]["keys"]) == EPOCH_BATCHES * BATCH_SIZE
            # every sample of rank r comes from rank r's shards only
            assert set(ep[r]["shards"]) <= rank_shards[r]
            assert set(ep[r]["keys"]) <= rank_keys[r]
            # both of the rank's DataLoader workers contributed (each reads its own shards)
            assert len(set(ep[r]["shards"])) >= 2
        assert not set(ep[0]["keys"]) & set(ep[1]["keys"])  # disjoint within the epoch
    # a new epoch draws a new order (the loader re-seeds per epoch)
    assert res[0]["epochs"][0]["keys"] != res[0]["epochs"][1]["keys"]


if __name__ == "__main__":
    _rank_main(sys.argv[1], sys.argv[2])
