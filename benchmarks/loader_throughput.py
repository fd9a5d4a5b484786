#!/usr/bin/env python
"""Clips/s of the project's WebDataset loader against the authors' folder loader and pure decoding.

All contenders read the same 5-frame 854x480 clips (delta = 4; frame t and the 4 before it, the
first frame repeated for t < 4) of the same data, in one run, with the same number of worker
processes:

  loader   pipeline.loading.loader.make_loader over shards that launch/preprocess.py wrote from the
           DAVIS folder: tar read, JPEG decode (torchvision), mask PNG + json decode, augmentation
           preset ``tcb_pretrain`` (random horizontal flip of the whole clip, size 480x854),
           batching in the pipeline.
  loader-frames  the same with ``masks=False``: the TCB-pretraining case (VID clips have no
           masks; G and D never look at one).
  folder   the authors' way: a torch Dataset over the folder listing; per clip, delta+1 frames with
           cv2.imread, float32, per-frame flip (cv2.flip) and cv2.resize to the phase size, mean
           subtraction, channels concatenated, torch.from_numpy; plus the mask of frame t; batched
           by a torch DataLoader (random order).
  ceiling  decode only: the clips' JPEG bytes are read into memory first, then each clip's 5 frames
           are decoded, RGB, the fastest way we know: simplejpeg (libjpeg-turbo) into one reused
           buffer (what the loader does into its batch slots; ~7% faster than torchvision's
           decode_jpeg, which allocates each frame); nothing else (no mask, no augmentation, no
           batching, nothing sent back from workers).
  ceiling-torchvision  the same with torchvision's decode_jpeg (for information: the ceiling the
           loader was judged against before it decoded into its slots).
  ceiling+mask  the ceiling plus the decode of each clip's mask PNG by the loader's own reader
           (pipeline/core/mask_png.py: zlib-ng for the releases' None/Sub-filtered masks,
           libspng, Pillow): decode-only of all the bytes the loader decodes for annotated clips.

Each is warmed up, then timed over ``--clips`` clips; that is repeated ``--repeats`` times
(round-robin over the contenders) and the best and median are kept. Targets (judged on the best
runs): loader >= 5x folder; each loader >= 0.8x the decode-only ceiling of the same members
(loader vs ceiling+mask, loader-frames vs ceiling); loader vs the frames-only ceiling is printed
for information. Torch and OpenCV run one thread each by
default (``--threads``), as in a DataLoader worker, so that no library gets the other core.

    python benchmarks/loader_throughput.py                    # real DAVIS sample if found
    python benchmarks/loader_throughput.py --workers 2 --json
    python benchmarks/loader_throughput.py --profile          # cProfile of the loader, in-process
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.io import ImageReadMode, decode_jpeg

try:
    import simplejpeg
except ImportError:  # the ceiling then decodes with torchvision only
    simplejpeg = None

from _common import (  # the repo is put on sys.path there
                     SPLITS, add_data_args, davis_source, run_and_report, sequences,
                     source_files, split_sequences, summarise, warm_page_cache)

from pipeline.core.mask_png import read_mask_values
from pipeline.loading.loader import make_loader
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess

DELTA = 4
SIZE = (480, 854)  # (H, W): TCB pretraining size
MEAN_BGR = np.array([104.008, 116.669, 122.675], dtype=np.float32)  # Caffe-style ImageNet mean
# loader: annotated clips (frames + mask), its ceiling decodes the same frames and mask.
# loader-frames: the TCB-pretraining case (VID clips have no masks), against decoding the frames.
TARGETS = {"loader/folder": 5.0, "loader/ceiling+mask": 0.8, "loader-frames/ceiling": 0.8}


# ----------------------------------------------------------------------------------------------
# the clips, as the authors list them


def list_clips(root: Path, seqs: list[str], delta: int = DELTA) -> list[tuple[list[str], str]]:
    """(frame paths oldest first, mask path of frame t) for every frame t of every sequence."""
    clips = []
    for seq in seqs:
        img_dir = os.path.join(root, "JPEGImages", "480p", seq)
        ann_dir = os.path.join(root, "Annotations", "480p", seq)
        names = sorted(os.listdir(img_dir))
        for t in range(len(names)):
            ids = [names[max(t - delta + i, 0)] for i in range(delta + 1)]
            mask = os.path.join(ann_dir, os.path.splitext(names[t])[0] + ".png")
            clips.append(([os.path.join(img_dir, n) for n in ids], mask))
    return clips


class FolderClips(Dataset):
    """The authors' style of dataset: files opened per frame, augmentation in float32 per frame."""

    def __init__(self, clips, size=SIZE, mean=MEAN_BGR):
        self.clips, self.size, self.mean = clips, size, mean

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        frame_paths, mask_path = self.clips[index]
        height, width = self.size
        flip = random.random() < 0.5
        imgs = []
        for path in frame_paths:
            img = cv2.imread(path).astype(np.float32)
            if flip:
                img = cv2.flip(img, 1)
            img = cv2.resize(img, (width, height))
            img -= self.mean
            imgs.append(img)
        frames = np.concatenate(imgs, axis=2).transpose(2, 0, 1)  # (3 * (delta+1), H, W)
        mask = cv2.imread(mask_path, 0).astype(np.float32)
        if flip:
            mask = cv2.flip(mask, 1)
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        mask = (mask > 127).astype(np.float32)
        return torch.from_numpy(frames), torch.from_numpy(mask)


class DecodeOnly(Dataset):
    """The ceiling: JPEG bytes already in memory, decode the clip's frames, return nothing.

    ``with_mask``: also decode the mask PNG of frame t the way the loader does (PIL), for the
    informative ``ceiling+mask`` row (the loader has that work to do too; the target ignores it).
    """

    def __init__(self, clips, with_mask: bool = False, decoder: str = "fastest"):
        cache: dict[str, torch.Tensor] = {}
        self.clips, self.masks, self.with_mask = [], [], with_mask
        self.decoder = decoder if simplejpeg is not None else "torchvision"
        for frame_paths, mask_path in clips:
            for p in frame_paths:
                if p not in cache:
                    cache[p] = torch.from_numpy(np.fromfile(p, dtype=np.uint8))
            self.clips.append([cache[p] for p in frame_paths])
            self.masks.append(Path(mask_path).read_bytes() if with_mask else None)
        self.buf = None  # the reused output buffer (per worker: each has its own copy)

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        for data in self.clips[index]:
            if self.decoder == "torchvision":
                decode_jpeg(data, mode=ImageReadMode.RGB)
                continue
            raw = data.numpy()
            h, w = simplejpeg.decode_jpeg_header(raw)[:2]
            if self.buf is None or self.buf.shape != (h, w, 3):
                self.buf = np.empty((h, w, 3), np.uint8)
            simplejpeg.decode_jpeg(raw, colorspace="RGB", buffer=self.buf)
        if self.with_mask:  # the fastest mask decode we have: the loader's own reader
            read_mask_values(self.masks[index])
        return 1


# ----------------------------------------------------------------------------------------------
# the three contenders: each a factory of a fresh batch iterator + how many clips a batch holds


def preprocess_shards(src: Path, out: Path, shard_max_count: int) -> list[Path]:
    run_preprocess(PreprocessConfig("davis2016", src, out, splits=list(SPLITS),
                                    shard_max_count=shard_max_count, progress=False))
    return [out / "davis2016" / s for s in SPLITS]


def project_factory(shard_dirs, batch_size, workers, masks=True, buffer_slots=None,
                    decode_device=None):
    epoch = [0]

    def make():
        loader = make_loader([str(d) for d in shard_dirs], batch_size=batch_size,
                             num_workers=workers, epoch_batches=None, augment="tcb_pretrain",
                             seed=0, masks=masks, buffer_slots=buffer_slots,
                             decode_device=decode_device)
        loader.set_epoch(epoch[0])
        epoch[0] += 1
        return iter(loader)

    return make, lambda batch: len(batch["key"])


def folder_factory(clips, batch_size, workers, total):
    ds = FolderClips(clips)

    def make():
        sampler = RandomSampler(ds, num_samples=total)
        return iter(DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers))

    return make, lambda batch: batch[0].shape[0]


def ceiling_factory(clips, workers, total, with_mask=False, decoder="fastest"):
    ds = DecodeOnly(clips, with_mask, decoder)

    def make():
        sampler = RandomSampler(ds, num_samples=total)
        return iter(DataLoader(ds, batch_size=None, sampler=sampler, num_workers=workers))

    return make, lambda n: n


def consume(it, count, n_clips: int) -> int:
    """Take batches until they hold ``n_clips`` clips; returns how many they held."""
    got = 0
    while got < n_clips:
        got += count(next(it))
    return got


def time_one(make, count, warmup: int, n_clips: int) -> float:
    """Clips/s over ``n_clips`` clips, after ``warmup`` clips (worker start-up, buffers)."""
    it = make()
    consume(it, count, warmup)
    start = time.perf_counter()
    got = consume(it, count, n_clips)
    seconds = time.perf_counter() - start
    del it  # shuts down the workers before the next contender runs
    return got / seconds


# ----------------------------------------------------------------------------------------------
# the run


def profile_loader(make, count, warmup: int, n_clips: int, top: int) -> str:
    """cProfile of the loader (use --workers 0: cProfile sees only this process)."""
    prof = cProfile.Profile()
    it = make()
    consume(it, count, warmup)
    prof.enable()
    consume(it, count, n_clips)
    prof.disable()
    del it
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def run(args, tmp: Path) -> dict:
    src, what = davis_source(args.davis_root, tmp, args.synthetic,
                             n_frames=8 if args.quick else 50)
    seqs = sequences(src)
    clips = list_clips(src, seqs)
    # every split needs >= max(1, workers) shards (one per worker)
    smallest = min(len(list_clips(src, split_sequences(src, s))) for s in SPLITS)
    per_shard = max(1, min(args.shard_max_count, smallest // max(1, args.workers)))
    shard_dirs = preprocess_shards(src, tmp / "shards", per_shard)
    warm_page_cache(src, source_files(src, seqs))
    total = (args.warmup + args.clips) * 2 + args.batch_size * (args.workers + 1) * 4
    contenders = {
        "loader": project_factory(shard_dirs, args.batch_size, args.workers,
                                  buffer_slots=args.buffer_slots),
        "loader-frames": project_factory(shard_dirs, args.batch_size, args.workers, masks=False,
                                         buffer_slots=args.buffer_slots),
        "folder": folder_factory(clips, args.batch_size, args.workers, total),
        "ceiling": ceiling_factory(clips, args.workers, total),
        "ceiling+mask": ceiling_factory(clips, args.workers, total, with_mask=True),
        "ceiling-torchvision": ceiling_factory(clips, args.workers, total, decoder="torchvision"),
    }
    if args.decode_device:  # workers send JPEG bytes, this process decodes (e.g. on cuda)
        contenders["loader-device"] = project_factory(shard_dirs, args.batch_size, args.workers,
                                                      decode_device=args.decode_device)
    if args.profile:
        make, count = contenders["loader"]
        print(profile_loader(make, count, args.warmup, args.clips, args.profile_top))
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for name, (make, count) in contenders.items():
            rates[name].append(time_one(make, count, args.warmup, args.clips))
    results = {k: summarise(v) for k, v in rates.items()}
    pairs = [("loader", "folder"), ("loader", "ceiling+mask"), ("loader-frames", "ceiling"),
             ("loader", "ceiling"), ("loader-frames", "ceiling-torchvision")]
    if "loader-device" in results:
        pairs.append(("loader-device", "loader"))
    ratios = {f"{a}/{b}": results[a]["best"] / results[b]["best"] for a, b in pairs}
    ratios_median = {f"{a}/{b}": results[a]["median"] / results[b]["median"] for a, b in pairs}
    return {
        "benchmark": "loader_throughput", "data": what, "clips_in_data": len(clips),
        "clip": f"{DELTA + 1} frames {SIZE[1]}x{SIZE[0]}", "augment": "tcb_pretrain",
        "workers": args.workers, "batch_size": args.batch_size, "warmup_clips": args.warmup,
        "buffer_slots": args.buffer_slots, "decode_device": args.decode_device,
        "timed_clips": args.clips, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "clips_per_s": results, "ratios": ratios,
        "ratios_median": ratios_median, "targets": TARGETS,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "pass": {k: ratios[k] >= TARGETS[k] for k in TARGETS},
    }


def print_table(r: dict) -> None:
    print(f"data: {r['data']}, {r['clips_in_data']} clips of {r['clip']}")
    print(f"workers={r['workers']} batch_size={r['batch_size']} warm-up={r['warmup_clips']} "
          f"timed={r['timed_clips']} clips x {r['repeats']} repeats, torch threads "
          f"{r['torch_threads']}, {r['cpu_count']} CPUs")
    print(f"{'':20s}{'clips/s best':>14s}{'median':>10s}")
    for name, s in r["clips_per_s"].items():
        print(f"{name:20s}{s['best']:14.1f}{s['median']:10.1f}")
    for k, v in r["ratios"].items():
        goal = (f"target >= {r['targets'][k]}x  {'PASS' if r['pass'][k] else 'FAIL'}"
                if k in r["targets"] else "(information)")
        print(f"{k:34s}{v:6.2f}x  (median {r['ratios_median'][k]:.2f}x)  {goal}")
    print(f"load average at the end: {r['load_average']}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes, the same for all contenders "
                        "(default 0: in-process)")
    p.add_argument("--batch-size", type=int, default=3, help="clips per batch (authors' TCB: 3)")
    p.add_argument("--decode-device", default=None,
                   help="also time the loader with JPEGs decoded in this process on this device "
                        "(cuda, cpu): contender loader-device")
    p.add_argument("--buffer-slots", type=int, default=None,
                   help="batch buffers each worker reuses (default: the loader's; 0: a fresh "
                        "shared-memory buffer per batch, the loader before the buffer pool)")
    p.add_argument("--clips", type=int, default=210, help="clips timed per run")
    p.add_argument("--warmup", type=int, default=30, help="clips consumed before timing")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each contender")
    p.add_argument("--shard-max-count", type=int, default=10,
                   help="clips per shard at most (lowered so that every split has a shard per "
                        "worker)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and OpenCV threads (default 1, what a DataLoader worker gets; "
                        "0 = leave the libraries' defaults)")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the loader first (in-process part only: use --workers 0)")
    p.add_argument("--profile-top", type=int, default=25, help="functions shown by --profile")
    p.add_argument("--quick", action="store_true",
                   help="tiny run (smoke test): few clips, 1 repeat")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--tmp-dir",
                   help="where the shards (and synthetic data) go (default: system temp)")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.warmup, args.repeats = 6, 3, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    return run_and_report(args, run, print_table, "loader_bench_")


if __name__ == "__main__":
    sys.exit(main())
