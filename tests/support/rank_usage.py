"""A training hook for scale tests: what each rank of a run consumed and used. Loaded through the
config's extension point, ``hooks=[support.rank_usage:record]``, with the tests folder on
``PYTHONPATH`` (:func:`usage_env`); active where ``$STCNN_RANK_USAGE`` names a folder.

When its process ends (after the loader's workers were joined) every rank writes
``rank_NNNNN.json``: the loader batches and samples the training loop received in this process,
the intra-op threads, peak RSS of the rank process and of its largest loader worker (shared
library pages counted in each), the memory only this rank and its workers hold at the end of
training (USS), and the wall time from the process's start. :func:`read_usage` loads them."""

from __future__ import annotations

import atexit
import json
import os
import resource
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import torch

from pipeline.train.loop import HookBase

USAGE_ENV = "STCNN_RANK_USAGE"
TESTS = Path(__file__).resolve().parents[1]


def _process_start() -> float:
    """This process's start, as a ``time.time()`` value (``/proc/self/stat``, Linux)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


class RankUsage(HookBase):
    def __init__(self, folder: Path, rank: int):
        self.path = folder / f"rank_{rank:05d}.json"
        self.doc: dict[str, Any] = {"rank": rank, "batches": 0, "samples": 0}
        self.started = _process_start()

    def before_train(self) -> None:
        loop = self.loop
        loop._iter = self._counted(loop._iter)      # every batch the loop takes passes here
        self.doc["start_step"] = loop.state.step
        self.t_train = time.perf_counter()
        atexit.register(self._write)

    def _counted(self, it: Iterator[dict]) -> Iterator[dict]:
        for batch in it:
            self.doc["batches"] += 1
            self.doc["samples"] += self.loop.phase.samples(batch)
            yield batch

    def after_train(self) -> None:
        me = psutil.Process()
        uss = 0
        for p in [me, *me.children(recursive=True)]:     # the loader's workers are still alive
            try:
                uss += p.memory_full_info().uss
            except psutil.Error:
                pass
        self.doc.update(steps=self.loop.state.step, threads=torch.get_num_threads(),
                        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                        train_s=round(time.perf_counter() - self.t_train, 2),
                        uss_mb=round(uss / 2**20, 1))

    def _write(self) -> None:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024       # KiB -> MiB
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        self.doc.update(peak_rss_mb=round(own, 1), worker_peak_rss_mb=round(workers, 1),
                        wall_s=round(time.time() - self.started, 2))
        self.path.write_text(json.dumps(self.doc))


def record(ctx) -> RankUsage | None:
    folder = os.environ.get(USAGE_ENV)
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return RankUsage(Path(folder), ctx.rank)


def usage_env(folder: Path, base: dict[str, str]) -> dict[str, str]:
    """``base`` with ``$STCNN_RANK_USAGE=folder`` and the tests folder on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(TESTS), base.get("PYTHONPATH")) if p)
    return dict(base, PYTHONPATH=path, **{USAGE_ENV: str(folder)})


def read_usage(folder: Path) -> list[dict]:
    """The ranks' records of one run, by rank."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank_*.json"))]
