"""Scale models on one machine: every offline phase under ``torchrun --nproc_per_node=16`` (gloo,
one intra-op thread per rank, 2 loader workers per rank: 32 loader streams over shard sets of
fewer shards), and the GAN phase under DeepSpeed ZeRO-2 on 8 ranks.

Each launch is bounded by a timeout (a hang fails the test and its processes are killed) and
must leave: a completed summary, a checkpoint holding one rank file per rank, and every rank
having received the same number of batches and samples (counted in each rank by
``support/rank_usage.py``, and the data position each rank saved in its rank file). Peak RSS and
wall time of each rank are reported (``record_property`` and the test's output, ``-rP``).

Stop/resume: every phase on 16 ranks (DDP) and the GAN phase under ZeRO-2 on 8 is run 4 steps
straight with a checkpoint at step 2 (the alternating phase one TCB and one SSB step per round,
so both branches are trained before and after the stop); the run directory is copied, its
step-4 checkpoint and weights removed (as if the job had died after step 2) and the copy resumed
to step 4: bit-identical to the straight run (weights, engines, DeepSpeed's partitions, every
rank's RNG and data position). One launch less than stopping a third run with
``checkpoint.stop_after`` (``test_train_ddp.py`` covers that hook)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from support import child_env
from support.rank_usage import read_usage, usage_env
from support.training import (assert_runs_bit_identical, deepspeed_tensors, failure, summary,
                              torchrun_cmd)

pytestmark = pytest.mark.slow

RANKS, ZERO_RANKS, WORKERS = 16, 8, 2
LAUNCH_TIMEOUT = 400  # s per launch, more is a hang (launches took <= 272 s on 2 busy cores); two
                      # of them stay within pytest's 900 s per test (pyproject.toml)
PER_RANK = 2                  # samples per rank and step (BatchNorm in D needs >= 2)
SETS = {"gan": ["ilsvrc_vid/train"], "segmentation": ["msra10k/train", "voc2012/train"],
        "alternating": ["davis2016/train"]}


def launch(phase: str, lake: Path, run_dir: Path, *overrides: str, nproc: int,
           record_property) -> tuple[dict, list[dict]]:
    """One phase on ``nproc`` ranks with 2 loader workers each, to its end within
    :data:`LAUNCH_TIMEOUT`; returns the summary and the ranks' usage records."""
    usage = run_dir.parent / f"{run_dir.name}.usage"
    cmd = torchrun_cmd(phase, lake, run_dir, f"batch.size={PER_RANK * nproc}",
                       f"data.num_workers={WORKERS}", "checkpoint.every=2",
                       "hooks=[support.rank_usage:record]", *overrides, nproc=nproc)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=usage_env(usage, child_env()), cwd=run_dir.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"{phase} on {nproc} ranks still running after {LAUNCH_TIMEOUT} s (a hang):\n"
                    f"{out[-3000:]}\n{err[-6000:]}")
    wall = time.monotonic() - t0
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    assert proc.returncode == 0, failure(done)
    ranks = read_usage(usage)
    assert [r["rank"] for r in ranks] == list(range(nproc)), failure(done)
    line = usage_line(run_dir.name, f"{phase} x{nproc} ranks", wall, ranks)
    print(line)
    record_property(run_dir.name, line)
    return summary(run_dir), ranks


def kill_tree(pid: int) -> None:
    """``pid`` and every process under it (torchrun starts each rank in a session of its own,
    so a process group kill would miss them)."""
    top = psutil.Process(pid)
    for p in [top, *top.children(recursive=True)]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def usage_line(name: str, what: str, wall: float, ranks: list[dict]) -> str:
    """One launch's figures: its wall time; per rank the ranges over ranks."""
    def span(key: str) -> str:
        values = [r[key] for r in ranks]
        return f"{min(values):.0f}-{max(values):.0f}"

    return (f"{name}: {what}, launch {wall:.0f} s; per rank: wall {span('wall_s')} s (training "
            f"{span('train_s')} s), peak RSS {span('peak_rss_mb')} MB, largest child process "
            f"(loader worker; a compiler where DeepSpeed builds an op) "
            f"{span('worker_peak_rss_mb')} MB, own memory with its workers (USS) "
            f"{span('uss_mb')} MB (all ranks {sum(r['uss_mb'] for r in ranks) / 1024:.1f} GB)")


def check_run(run_dir: Path, s: dict, ranks: list[dict], *, nproc: int, steps: int,
              start: int = 0) -> None:
    """Completed on ``nproc`` ranks; one rank file per rank in the last checkpoint; every rank
    took the same batches (its count, its samples, its saved data position); one thread each."""
    assert s["completed"] and s["steps"] == steps and s["start_step"] == start, s
    assert s["world_size"] == nproc and s["micro_size"] == PER_RANK and s["accum"] == 1, s
    ckpt = run_dir / "checkpoints" / f"step_{steps:08d}"
    assert sorted(p.name for p in ckpt.glob("rank_*.pt")) == [
        f"rank_{r:05d}.pt" for r in range(nproc)]
    for r in ranks:
        assert (r["batches"], r["samples"]) == (steps - start, (steps - start) * PER_RANK), r
        assert r["threads"] == 1 and r["omp_num_threads"] == "1", r
    positions = {r: torch.load(ckpt / f"rank_{r:05d}.pt", weights_only=True)["state"]["data"]
                 for r in range(nproc)}
    assert len({tuple(sorted(p.items())) for p in positions.values()}) == 1, positions


def resumable_copy(straight: Path, to: Path, step: int) -> Path:
    """``straight`` as it was after checkpoint ``step``: later checkpoints, the weights and the
    summary removed."""
    shutil.copytree(straight, to)
    for ckpt in (to / "checkpoints").glob("step_*"):
        if int(ckpt.name[5:]) > step:
            shutil.rmtree(ckpt)
    for name in ("weights.pt", "summary.json"):
        (to / name).unlink()
    return to


@pytest.fixture(scope="module")
def lake(train_lake):
    """The tests' lake; every set the phases read has fewer shards than the 32 loader streams."""
    for sets in SETS.values():
        for s in sets:
            n = len(list((train_lake / s).glob("*_stats.json")))
            assert 0 < n < RANKS * WORKERS, (s, n)
    return train_lake


@pytest.mark.parametrize("phase, extra", [
    ("gan", ()),
    ("segmentation", ()),
    ("alternating", ("alternating.tcb_steps=1", "alternating.ssb_steps=1")),  # both branches
], ids=["gan", "segmentation", "alternating"])
def test_phase_on_16_ranks_resumes_bit_identically(phase, extra, lake, tmp_path,
                                                   record_property):
    straight, resumed = tmp_path / f"{phase}_straight", tmp_path / f"{phase}_resumed"
    s, ranks = launch(phase, lake, straight, "steps=4", *extra, nproc=RANKS,
                      record_property=record_property)
    check_run(straight, s, ranks, nproc=RANKS, steps=4)
    resumable_copy(straight, resumed, step=2)
    s, ranks = launch(phase, lake, resumed, "steps=4", *extra, nproc=RANKS,
                      record_property=record_property)
    check_run(resumed, s, ranks, nproc=RANKS, steps=4, start=2)
    assert_runs_bit_identical(straight, resumed, step=4, ranks=RANKS)


def test_deepspeed_zero2_on_8_ranks_resumes_bit_identically(lake, tmp_path, record_property):
    ds = ("dist.engine=deepspeed", "dist.zero_stage=2", "steps=4")
    straight, resumed = tmp_path / "zero2_straight", tmp_path / "zero2_resumed"
    s, ranks = launch("gan", lake, straight, *ds, nproc=ZERO_RANKS,
                      record_property=record_property)
    check_run(straight, s, ranks, nproc=ZERO_RANKS, steps=4)
    resumable_copy(straight, resumed, step=2)
    s, ranks = launch("gan", lake, resumed, *ds, nproc=ZERO_RANKS,
                      record_property=record_property)
    check_run(resumed, s, ranks, nproc=ZERO_RANKS, steps=4, start=2)
    assert_runs_bit_identical(straight, resumed, step=4, ranks=ZERO_RANKS)
    last = "checkpoints/step_00000004"
    a, b = deepspeed_tensors(straight / last), deepspeed_tensors(resumed / last)
    partitions = [f for f in a if "optim_states" in f]
    assert len(partitions) == 2 * ZERO_RANKS, sorted(a)     # G's and D's, one per rank
    assert a.keys() == b.keys()
    for f in a:
        assert a[f].keys() == b[f].keys(), f
        for path, x in a[f].items():
            same = torch.equal(x, b[f][path]) if isinstance(x, torch.Tensor) else x == b[f][path]
            assert same, f"{f}{path} differs after the resume"
    assert any("exp_avg" in p for f in partitions for p in a[f]), "no Adam moments saved"
