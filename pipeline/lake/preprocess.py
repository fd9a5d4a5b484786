"""The preprocessing job: an official layout -> ``shards/<dataset>/<split>/`` (docs/architecture.md).

Per split: list the source, plan the samples and their shards (independent of how the work is
split), write ``manifest.json``. Then write this task's shards of every split (shard i belongs
to task i % num_tasks) with ``workers`` processes, and, once every shard of a split is finished
(by this task or another), write its ``catalog.parquet``, the union of the per-shard parquet
files.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

from pipeline.core.atomic import atomic_write_text, remove_dead_temps
from pipeline.core.logs import report_events
from pipeline.lake import store as objectstore
from pipeline.lake.catalog import finished, write_catalog
from pipeline.lake.contract import CATALOG, MANIFEST, shard_name
from pipeline.lake.plan import payload_bytes, plan_clips, plan_images, source_bytes, split_into_shards
from pipeline.lake.writer import plan_digest, write_shard
from pipeline.sources import SOURCES, get_source
from pipeline.sources.base import Source
from pipeline.sources.types import SourceError
from pipeline.core.config import ConfigError

log = logging.getLogger(__name__)

THROTTLE_ENV = "STCNN_PREPROCESS_THROTTLE"  # seconds per member: fault-injection for kill tests


@dataclasses.dataclass
class PreprocessConfig:
    dataset: str
    src: Path
    out: Path | str = Path("shards")  # a folder, or s3://bucket/prefix (staged, then uploaded)
    splits: list[str] | None = None  # None: every split the source has
    delta: int = 4
    clip_stride: int = 1
    shard_max_count: int = 256
    shard_max_bytes: int = 512 * 1024 * 1024
    workers: int = 1
    # shard i is written by task i % num_tasks (resolve_task)
    task_index: int | None = None  # None: $SLURM_ARRAY_TASK_ID itself (absolute), else 0
    # None: $SLURM_ARRAY_TASK_COUNT of a whole array 0..COUNT-1 (any other array: an error), else 1
    num_tasks: int | None = None
    on_error: Literal["raise", "skip"] = "raise"
    verify: Literal["header", "decode"] = "header"
    progress: bool = True
    # out=s3://...: the local folder the sets are written to before upload (None: a temporary
    # folder, removed afterwards; a persistent one lets re-runs skip finished shards)
    staging: Path | None = None


def _array_var(env, name: str) -> int:
    try:
        return int(env[name])
    except KeyError:
        raise ConfigError(f"{name} is not set in this SLURM array task: pass --num-tasks N, the "
                         "size of the array whose tasks you run") from None
    except ValueError:
        raise ConfigError(f"{name}={env[name]!r} is not an integer: pass --task-index and "
                         "--num-tasks by hand") from None


def _array_size(env) -> int:
    """The task count of a whole SLURM array ``0..COUNT-1``; any other array is an error."""
    lo, hi, count = (_array_var(env, f"SLURM_ARRAY_TASK_{k}") for k in ("MIN", "MAX", "COUNT"))
    if lo == 0 and hi == count - 1:
        return count
    raise ConfigError(
        f"this SLURM array (task ids {lo}..{hi}, {count} task(s)) is not a whole array "
        f"0..N-1, so the number of tasks sharing the shards is unknown: pass --num-tasks N, the "
        f"size of the array whose tasks you re-run (e.g. --num-tasks 64 after --array=0-63)")


def resolve_task(task_index: int | None, num_tasks: int | None,
                 env: dict | None = None) -> tuple[int, int]:
    """This task's index and the number of tasks sharing the shards (shard i is written by task
    i % num_tasks).

    In a SLURM array the index is ``SLURM_ARRAY_TASK_ID`` itself, so any subset of an array's
    ids (``--array=17,42`` re-running two tasks of ``--array=0-63``) builds exactly those tasks'
    shards. The count is ``num_tasks`` when given, else ``SLURM_ARRAY_TASK_COUNT`` when the
    array is exactly ``0..COUNT-1``; any other array without ``num_tasks`` is an error. Outside
    an array: task 0 of 1 unless given. Raises ValueError (naming the fix) for an index outside
    ``[0, num_tasks)``."""
    env = os.environ if env is None else env
    array_id = env.get("SLURM_ARRAY_TASK_ID")
    in_array = array_id is not None and task_index is None
    if num_tasks is None:
        num_tasks = _array_size(env) if array_id is not None else 1
    if num_tasks < 1:
        raise ConfigError(f"--num-tasks must be >= 1, got {num_tasks}")
    if in_array:
        task_index = _array_var(env, "SLURM_ARRAY_TASK_ID")
    elif task_index is None:
        task_index = 0
    if not 0 <= task_index < num_tasks:
        if in_array:
            raise ConfigError(
                f"SLURM_ARRAY_TASK_ID {task_index} is not in [0, {num_tasks}) of --num-tasks "
                f"{num_tasks}: submit task ids 0..{num_tasks - 1} only, or pass --num-tasks N, "
                "the size of the array whose tasks you re-run")
        raise ConfigError(f"--task-index {task_index} is not in [0, {num_tasks}): use "
                         f"--task-index 0..{num_tasks - 1} with --num-tasks {num_tasks}")
    return task_index, num_tasks


def _write_one(args: tuple) -> tuple:
    out_dir, index, specs, source, dataset, split, digest, verify, throttle = args
    before = len(source.skips.items)
    result = write_shard(out_dir, index, specs, source, dataset=dataset, split=split,
                         digest=digest, verify=verify, throttle=throttle)
    return result, source.skips.items[before:]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="shard", disable=not enabled, leave=False)


@dataclasses.dataclass
class _SplitPlan:
    """One split, planned: its folder, manifest and this task's shard jobs."""
    split: str
    set_dir: Path
    n_shards: int
    n_specs: int
    mine: list[int]
    jobs: list[tuple]
    amplification: float | None
    t0: float


def plan_split(cfg: PreprocessConfig, source: Source, split: str,
               task_index: int, num_tasks: int) -> _SplitPlan:
    """List and plan one split, write its ``manifest.json``; the shards are written later."""
    t0 = time.perf_counter()
    if source.kind == "clip":
        specs = plan_clips(source.sequences(split), cfg.delta, cfg.clip_stride)
    else:
        specs = plan_images(source.images(split))
    if not specs:
        raise SourceError(source.root, f"split {split!r} of {source.name} has no samples",
                          "check the split's list file and that its files exist")
    shards = split_into_shards(specs, cfg.shard_max_count, cfg.shard_max_bytes)
    settings = {"dataset": source.name, "split": split, "kind": source.kind,
                "delta": cfg.delta if source.kind == "clip" else None,
                "clip_stride": cfg.clip_stride if source.kind == "clip" else None,
                "shard_max_count": cfg.shard_max_count, "shard_max_bytes": cfg.shard_max_bytes,
                "on_error": cfg.on_error, "verify": cfg.verify}
    digests = [plan_digest(s, source.root, settings) for s in shards]
    set_dir = Path(cfg.out) / source.name / split
    set_dir.mkdir(parents=True, exist_ok=True)
    src_bytes = source_bytes(specs)
    planned = payload_bytes(specs)
    manifest = {
        "dataset": source.name, "split": split, "kind": source.kind, "settings": settings,
        "n_shards": len(shards), "n_samples_planned": len(specs),
        "n_sequences": len({s.sequence for s in specs}),
        "source_bytes": src_bytes, "planned_payload_bytes": planned,
        "amplification_planned": round(planned / src_bytes, 4) if src_bytes else None,
        "listing_skips": source.skips.as_dict(),
        "shards": [{"name": shard_name(i), "samples_planned": len(s), "plan_digest": d}
                   for i, (s, d) in enumerate(zip(shards, digests))],
    }
    for name in (MANIFEST, CATALOG):   # temps of killed writers (other tasks' live ones stay)
        remove_dead_temps(set_dir, name)
    atomic_write_text(set_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    mine = [i for i in range(len(shards)) if i % num_tasks == task_index]
    throttle = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    jobs = [(set_dir, i, shards[i], source, source.name, split, digests[i], cfg.verify, throttle)
            for i in mine]
    return _SplitPlan(split, set_dir, len(shards), len(specs), mine, jobs,
                      manifest["amplification_planned"], t0)


def finish_split(plan: _SplitPlan, outcomes: list[tuple], source: Source, task_index: int,
                 num_tasks: int) -> dict:
    """After this task's shards of the split are written (``outcomes`` of :func:`_write_one`):
    the catalog, once every shard of the split is finished, and the split's summary."""
    results = [r for r, _ in outcomes]
    skipped_files = [item for _, items in outcomes for item in items]
    done = finished(plan.set_dir, plan.n_shards)
    catalog = write_catalog(plan.set_dir, plan.n_shards) if all(done) else None
    written = [r for r in results if not r.skipped]
    seconds = time.perf_counter() - plan.t0
    out_bytes = sum(r.bytes for r in written)
    failures: dict[str, int] = {}
    for r in results:
        for k, v in r.failures.items():
            failures[k] = failures.get(k, 0) + v
    return {
        "dataset": source.name, "split": plan.split, "dir": str(plan.set_dir),
        "task": f"{task_index}/{num_tasks}", "shards_total": plan.n_shards,
        "shards_this_task": len(plan.mine), "shards_written": len(written),
        "shards_already_finished": len(results) - len(written),
        "shards_unfinished": done.count(False),
        "samples_this_task": sum(r.count for r in results), "samples_planned": plan.n_specs,
        "failures": failures, "skipped_files": skipped_files,
        "listing_skips": source.skips.as_dict()["by_reason"],
        "amplification": plan.amplification,
        "written_bytes": out_bytes, "seconds": round(seconds, 3),
        "mb_per_s": round(out_bytes / seconds / 1e6, 2) if written else None,
        "catalog": str(catalog) if catalog else None,
    }


def write_splits(cfg: PreprocessConfig, source: Source, plans: list[_SplitPlan],
                 task_index: int, num_tasks: int) -> list[dict]:
    """Write the shards of every planned split, ``cfg.workers`` processes for all of them
    together (one pool: no start-up and no idle tail per split), and finish each split as soon
    as its last shard is in (its catalog is written while the next split's shards are)."""
    total = sum(len(p.jobs) for p in plans)
    desc = f"{source.name}/{'+'.join(p.split for p in plans)}"
    summaries = []
    with _progress(total, desc, cfg.progress) as bar, contextlib.ExitStack() as stack:
        pool = (stack.enter_context(cf.ProcessPoolExecutor(max_workers=min(cfg.workers, total)))
                if cfg.workers > 1 and total > 1 else None)
        # all jobs submitted at once to the pool; without one, each runs when its turn comes
        pending = [[pool.submit(_write_one, job) if pool else job for job in p.jobs]
                   for p in plans]
        for plan, items in zip(plans, pending):
            outcomes = []
            for item in items:
                outcomes.append(item.result() if pool else _write_one(item))
                bar.update(1)
            summaries.append(finish_split(plan, outcomes, source, task_index, num_tasks))
    return summaries


def run_preprocess(cfg: PreprocessConfig) -> list[dict]:
    """Write this task's shards of the splits into the lake ``cfg.out``. A lake on the object
    store is written to a local staging folder (:func:`objectstore.writer_for`: its bucket and
    credentials checked first), each set then uploaded stats files last, so readers of the
    store only ever see finished shards: its summaries' ``dir`` is the set URL, ``upload`` the
    upload's counts and ``staging_dir`` the local set (None for a temporary staging folder)."""
    task_index, num_tasks = resolve_task(cfg.task_index, cfg.num_tasks)  # before any write
    cfg = dataclasses.replace(cfg, task_index=task_index, num_tasks=num_tasks)
    with objectstore.writer_for(cfg.out, cfg.staging) as lake:
        summaries = _write_sets(dataclasses.replace(cfg, out=lake.root, staging=None))
        for s in summaries:
            upload = lake.publish(s["dir"], s["dataset"], s["split"])
            if upload is None:  # written in place
                continue
            set_url = str(lake.location(s["dataset"], s["split"]))
            s["upload"] = upload
            s["staging_dir"] = s["dir"] if lake.kept else None
            s["dir"] = set_url
            if s["catalog"]:
                s["catalog"] = str(lake.location(s["dataset"], s["split"],
                                                 Path(s["catalog"]).name))
    return summaries


def _write_sets(cfg: PreprocessConfig) -> list[dict]:
    """The shards of this task (``cfg.task_index`` of ``cfg.num_tasks``), written into the
    local folder ``cfg.out``; the catalog of each split whose shards are all finished."""
    task_index, num_tasks = cfg.task_index, cfg.num_tasks
    if cfg.dataset not in SOURCES:
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; choose one of {sorted(SOURCES)}")
    if cfg.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {cfg.workers}")
    source = get_source(cfg.dataset, cfg.src, on_error=cfg.on_error)
    splits = cfg.splits or source.splits()
    unknown = [s for s in splits if s not in source.splits()]
    if unknown:
        raise SourceError(source.root, f"split(s) {unknown} not found in {cfg.dataset}",
                          f"choose among {source.splits()}")
    plans = [plan_split(cfg, source, split, task_index, num_tasks) for split in splits]
    summaries = write_splits(cfg, source, plans, task_index, num_tasks)
    events: collections.Counter = collections.Counter()
    for s in summaries:   # the splits' counted skips: bad inputs while writing, while listing
        events.update(s["failures"])
        events.update(s["listing_skips"])
    report_events(log, f"preprocess {source.name} ({'+'.join(splits)})", events)
    return summaries
