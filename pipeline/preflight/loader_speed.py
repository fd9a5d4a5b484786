"""Decode throughput of the loader: JPEGs decoded by the DataLoader workers on the CPU against
JPEG bytes sent by the workers and decoded a batch at a time on the device
(``data.decode_device``, :mod:`pipeline.loading.device_decode`), on shards written from a DAVIS
root by the preprocessing job (frames only, the TCB-pretraining case)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.loading.loader import make_loader
from pipeline.sources.davis import find_davis


def _lake(davis_root: str | None, tmp: Path, quick: bool) -> tuple[list[Path], str]:
    root = None if quick else find_davis(davis_root)
    what = f"DAVIS at {root}"
    if root is None:
        from pipeline.synthetic import SyntheticSpec, write_dataset

        size = (128, 72) if quick else (854, 480)
        root = write_dataset("davis2016", tmp / "davis", SyntheticSpec(
            size=size, n_sequences=2, n_frames=12, n_images=1, seed=0))
        what = f"synthetic DAVIS-2016 layout {size[0]}x{size[1]}"
    summaries = run_preprocess(PreprocessConfig("davis2016", root, tmp / "lake",
                                                splits=["train", "val"], shard_max_count=4,
                                                workers=1, progress=False))
    return [Path(s["dir"]) for s in summaries], what


def _clips_per_s(loader, batches: int, warmup: int, device: torch.device) -> float:
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        batch = next(it)
        n += batch["frames"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def measure_loader(device: torch.device, *, davis_root: str | None, quick: bool, workers: int,
                   batch: int, batches: int, warmup: int = 2) -> dict:
    with tempfile.TemporaryDirectory(prefix="stcnn-preflight-lake-") as tmp:
        dirs, what = _lake(davis_root, Path(tmp), quick)
        results = {}
        for name, decode_device in (("cpu_workers", None), ("device_decode", str(device))):
            loader = make_loader(dirs, batch, num_workers=workers, epoch_batches=None,
                                 augment={"size": None, "hflip": 0.5}, kind="clip",
                                 masks=False, rank=0, world_size=1, seed=0,
                                 decode_device=decode_device)
            results[name] = _clips_per_s(loader, batches, warmup, device)
            del loader
    return {"data": what, "workers": workers, "batch": batch, "timed_batches": batches,
            "cpu_workers_clips_per_s": results["cpu_workers"],
            "device_decode_clips_per_s": results["device_decode"],
            "device_decode_on": str(device),
            "ratio_device_to_workers": results["device_decode"] / results["cpu_workers"]}
