"""The main job on its embedded default: sample data -> data lake -> validation -> loader batches.

Each stage is the same code a user runs by hand (``launch/make_synthetic.py``,
``launch/preprocess.py``, ``launch/catalog.py``, the training loaders); this job chains them on
generated data so a fresh machine can run the pipeline end to end. Later phases (training,
online tuning, evaluation) extend it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from pipeline.core.config import to_dict, ConfigError
from pipeline.core.logs import report_events
from pipeline.lake.catalog import summarize, validate_set, find_sets
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.sources.registry import dataset_kind
from pipeline.synthetic import DATASETS, SyntheticSpec, write_dataset
from pipeline.loading.loader import make_loader

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SampleDataConfig:
    size: tuple[int, int] = (128, 72)  # (width, height); (854, 480) is DAVIS' 480p
    sequences: int = 2  # per split, video datasets
    frames: int = 10
    images: int = 8  # per split, image datasets
    seed: int = 0


@dataclasses.dataclass
class LakeConfig:
    delta: int = 4
    clip_stride: int = 1
    shard_max_count: int = 8
    shard_max_bytes: int = 512 * 1024 * 1024
    workers: int = 2


@dataclasses.dataclass
class LoaderCheckConfig:
    batches: int = 2
    batch_size: int = 2
    num_workers: int = 0
    seed: int = 0


@dataclasses.dataclass
class MainConfig:
    out: Path = Path("runs/main")
    datasets: list[str] = dataclasses.field(default_factory=lambda: list(DATASETS))
    sample_data: SampleDataConfig = dataclasses.field(default_factory=SampleDataConfig)
    lake: LakeConfig = dataclasses.field(default_factory=LakeConfig)
    loader: LoaderCheckConfig = dataclasses.field(default_factory=LoaderCheckConfig)


def _stage(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def check_loaders(lake: Path, cfg: LoaderCheckConfig, datasets: list[str]) -> list[dict]:
    """Draw a few augmented batches from every shard set, as the training phases will."""
    out = []
    for set_dir in find_sets(lake):
        dataset = set_dir.parent.name
        if dataset not in datasets:
            continue
        kind = dataset_kind(dataset)
        preset = "ssb_pretrain" if kind == "image" else ("tcb_pretrain" if dataset == "ilsvrc_vid" else "offline")
        loader = make_loader([set_dir], batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                             epoch_batches=cfg.batches, kind=kind, augment=preset, seed=cfg.seed,
                             rank=0, world_size=1)
        shapes = []
        for batch in loader:
            x = batch["frames"] if kind == "clip" else batch["image"]
            m = batch.get("mask")
            shapes.append({"input": list(x.shape), "mask": list(m.shape) if m is not None else None})
        out.append({"set": f"{dataset}/{set_dir.name}", "augment": preset, "batches": len(shapes),
                    "shapes": shapes[0] if shapes else None,
                    "data_events": loader.stats.events_counts()})
        print(f"{dataset}/{set_dir.name}: {len(shapes)} batches ({preset}), "
              f"input {shapes[0]['input']}, mask {shapes[0]['mask']}", flush=True)
    return out


def run_main(cfg: MainConfig) -> dict:
    unknown = sorted(set(cfg.datasets) - set(DATASETS))
    if unknown:
        raise ConfigError(f"unknown dataset(s) {unknown} in datasets; choose from {list(DATASETS)}")
    out = Path(cfg.out)
    sources, lake = out / "sources", out / "shards"
    report: dict = {"config": to_dict(cfg)}

    t = _stage(f"1/4 sample data in the official layouts -> {sources}")
    sd = cfg.sample_data
    spec = SyntheticSpec(size=tuple(sd.size), n_sequences=sd.sequences, n_frames=sd.frames,
                         n_images=sd.images, seed=sd.seed)
    shutil.rmtree(sources, ignore_errors=True)  # generated here: rewrite from scratch
    roots = {name: write_dataset(name, sources / name, spec) for name in cfg.datasets}
    for name, root in roots.items():
        print(f"{name}: {root}")
    report["seconds_sample_data"] = round(time.perf_counter() - t, 2)

    t = _stage(f"2/4 preprocessing -> {lake}")
    runs = []
    for name, root in roots.items():
        for s in run_preprocess(PreprocessConfig(
                dataset=name, src=root, out=lake, delta=cfg.lake.delta,
                clip_stride=cfg.lake.clip_stride, shard_max_count=cfg.lake.shard_max_count,
                shard_max_bytes=cfg.lake.shard_max_bytes, workers=cfg.lake.workers, progress=False)):
            s.pop("skipped_files")
            runs.append(s)
            print(f"{s['dataset']}/{s['split']}: {s['samples_this_task']} samples in "
                  f"{s['shards_total']} shards, amplification {s['amplification']}x", flush=True)
    report["preprocess"] = runs
    report["seconds_preprocess"] = round(time.perf_counter() - t, 2)

    _stage("3/4 catalog and validation")
    report["catalog"] = summarize(lake)
    problems = []
    for set_dir in find_sets(lake):
        v = validate_set(set_dir)
        print(f"{'OK' if v.ok else 'FAILED'} {set_dir.relative_to(lake)}: {v.shards_checked} shards, "
              f"{v.samples_checked} samples checked")
        problems += [f"{set_dir}: {e}" for e in v.errors if not v.ok]
    report["validation_errors"] = problems

    _stage("4/4 loader batches")
    report["loaders"] = check_loaders(lake, cfg.loader, cfg.datasets)
    events: collections.Counter = collections.Counter()
    for entry in report["loaders"]:
        events.update(entry["data_events"])
    report["data_events"] = report_events(log, "main: loader batches", events)

    report["ok"] = not problems
    (out / "summary.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nsummary: {out / 'summary.json'}; data lake: {lake}; "
          f"{'all shard sets valid' if not problems else f'{len(problems)} problem(s)'}")
    return report
