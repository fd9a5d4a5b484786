#!/usr/bin/env python
"""Samples/s of the FFCV store (pipeline/loading/ffcv/) against the WebDataset loader
(pipeline/loading/loader.py) on the static-image stage, the same images, the same workers.

Both read the image shards ``run_preprocess`` wrote (the MSRA10K layout: an image and its binary
mask per sample) and deliver batches of uint8 ``image`` [B, 3, H, W] and ``mask`` [B, H, W] at the
stored size, without augmentation:

  webdataset   ``make_loader(kind="image", augment=None)``: tar read, JPEG decode into the batch
               (simplejpeg, libjpeg-turbo), mask PNG decode, batching in ``--workers`` DataLoader
               worker processes
  ffcv-raw     ``make_ffcv_loader(size=None)`` over a store written by ``write_beton`` with
               ``image_mode="raw"`` (decoded pixels stored: exact, several times the JPEG bytes),
               ``--workers`` FFCV JIT threads, random order
  ffcv-jpg     the same over a store with ``image_mode="jpg"`` (re-encoded at quality 95: lossy,
               smaller; its pixels are not compared)

The pixels are checked first: the first ``--check`` samples of the raw store equal the WebDataset
path's (``iter_samples``), key by key. Then each loader is warmed up (worker start, FFCV's JIT
compilation) and timed over ``--samples`` samples, ``--repeats`` times round-robin; best and
median are reported, the ratio uses the best runs. The store's writing time and size are printed
for information (the store is written once, read every epoch). No target: the figure says when the
store pays (benchmarks/README.md, "FFCV store or WebDataset").

Data: ``--davis-root ROOT`` puts the root's annotated 854x480 frames into the MSRA10K layout
(links); otherwise synthetic MSRA10K images are written (``--size``, ``--images``).

    python benchmarks/ffcv_vs_webdataset.py --davis-root /data/DAVIS --workers 2
    python benchmarks/ffcv_vs_webdataset.py --quick --json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from _common import (add_data_args, add_run_args, find_davis, run_and_report, sequences,
                     summarise)  # the repo is put on sys.path there


def image_source(args, tmp: Path) -> tuple[Path, str]:
    """An MSRA10K-layout root: the DAVIS root's annotated frames (links), or synthetic images."""
    root = tmp / "msra"
    base = root / "MSRA10K_Imgs_GT" / "Imgs"
    davis = None if args.synthetic else find_davis(args.davis_root)
    if davis is None:
        from pipeline.synthetic import SyntheticSpec, write_dataset

        w, h = args.size
        write_dataset("msra10k", root, SyntheticSpec(size=(w, h), n_images=args.images))
        return root, f"synthetic MSRA10K layout, {args.images} images {w}x{h}"
    base.mkdir(parents=True)
    n = 0
    for seq in sequences(davis):
        for png in sorted((davis / "Annotations" / "480p" / seq).glob("*.png")):
            jpg = davis / "JPEGImages" / "480p" / seq / f"{png.stem}.jpg"
            if jpg.is_file():
                (base / f"{10000 + n}.jpg").symlink_to(jpg.resolve())
                (base / f"{10000 + n}.png").symlink_to(png.resolve())
                n += 1
    return root, f"real DAVIS-2016 frames ({davis.name}/), {n} annotated 854x480 frames"


def check_pixels(shard_dir: Path, beton: Path, count: int) -> int:
    """The first ``count`` samples of the raw store == the WebDataset path's; returns how many."""
    from pipeline.loading.ffcv import iter_beton
    from pipeline.loading.loader import iter_samples

    ffcv_items = {i["key"]: i for i in iter_beton(beton)}
    n = 0
    for s in iter_samples(shard_dir, kind="image"):
        item = ffcv_items[s["key"]]
        if not (np.array_equal(item["image"], s["image"].permute(1, 2, 0).numpy())
                and np.array_equal(item["mask"], s["mask"].numpy())):
            raise AssertionError(f"{s['key']}: the FFCV store's pixels differ from the "
                                 "WebDataset loader's")
        n += 1
        if n == count:
            break
    return n


def webdataset_stream(shard_dir: Path, batch_size: int, workers: int):
    from pipeline.loading.loader import make_loader

    loader = make_loader(str(shard_dir), batch_size=batch_size, num_workers=workers,
                         epoch_batches=None, kind="image", augment=None, seed=0)
    for batch in loader:
        yield batch["image"].shape[0]


def ffcv_stream(beton: Path, batch_size: int, workers: int):
    from pipeline.loading.ffcv import make_ffcv_loader

    loader = make_ffcv_loader(beton, batch_size, size=None, num_workers=workers, order="random",
                              seed=0)
    while True:  # epoch after epoch
        for image, _mask, _index in loader:
            yield image.shape[0]


def take(stream, n: int) -> int:
    got = 0
    while got < n:
        got += next(stream)
    return got


def run(args, tmp: Path) -> dict:
    import cv2
    import torch

    from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
    from pipeline.loading.ffcv import write_beton

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    src, what = image_source(args, tmp)
    n_images = len(list((src / "MSRA10K_Imgs_GT" / "Imgs").glob("*.jpg")))
    per_shard = max(1, n_images // (2 * max(1, args.workers)))
    run_preprocess(PreprocessConfig("msra10k", src, tmp / "shards", shard_max_count=per_shard,
                                    progress=False))
    shard_dir = tmp / "shards" / "msra10k" / "train"
    shard_mb = sum(p.stat().st_size for p in shard_dir.glob("*.tar")) / 1e6
    stores = {}
    for mode in args.stores:
        t = time.perf_counter()
        s = write_beton([shard_dir], tmp / f"{mode}.beton", image_mode=mode,
                        num_workers=max(1, args.workers))
        stores[mode] = {"write_s": round(time.perf_counter() - t, 2),
                        "mb": round(s["bytes"] / 1e6, 1), "samples": s["samples"]}
    checked = check_pixels(shard_dir, tmp / "raw.beton", args.check)
    streams = {"webdataset": webdataset_stream(shard_dir, args.batch_size, args.workers)}
    for mode in args.stores:
        streams[f"ffcv-{mode}"] = ffcv_stream(tmp / f"{mode}.beton", args.batch_size, args.workers)
    for st in streams.values():  # worker start-up, JIT compilation
        take(st, args.warmup)
    rates: dict[str, list[float]] = {k: [] for k in streams}
    for _ in range(args.repeats):
        for name, st in streams.items():
            take(st, args.warmup)  # drain what was prefetched while the others ran
            t = time.perf_counter()
            got = take(st, args.samples)
            rates[name].append(got / (time.perf_counter() - t))
    for st in streams.values():
        st.close()
    results = {k: summarise(v) for k, v in rates.items()}
    ratios = {f"{k}/webdataset": results[k]["best"] / results["webdataset"]["best"]
              for k in streams if k != "webdataset"}
    return {"benchmark": "ffcv_vs_webdataset", "data": what, "images": n_images,
            "workers": args.workers, "batch_size": args.batch_size, "warmup": args.warmup,
            "timed_samples": args.samples, "repeats": args.repeats,
            "pixels_equal": checked, "shards_mb": round(shard_mb, 1), "stores": stores,
            "samples_per_s": results, "ratios": ratios, "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def print_table(r: dict) -> None:
    print(f"data: {r['data']}; {r['workers']} worker(s), batch {r['batch_size']}, "
          f"{r['timed_samples']} samples timed, best of {r['repeats']}")
    print(f"pixels: the first {r['pixels_equal']} samples of the raw store equal the WebDataset "
          f"loader's")
    print(f"shards {r['shards_mb']} MB; " + "; ".join(
        f"{m} store {v['mb']} MB written in {v['write_s']} s" for m, v in r["stores"].items()))
    print(f"{'loader':<12}{'samples/s best':>16}{'median':>10}{'x webdataset':>14}")
    for name, v in r["samples_per_s"].items():
        ratio = r["ratios"].get(f"{name}/webdataset", 1.0)
        print(f"{name:<12}{v['best']:>16.1f}{v['median']:>10.1f}{ratio:>13.2f}x")
    print(f"load average {r['load_average']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2,
                   help="DataLoader workers (WebDataset) = JIT threads (FFCV)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples", type=int, default=400, help="samples timed per run")
    p.add_argument("--warmup", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check", type=int, default=8, help="samples whose pixels are compared")
    p.add_argument("--images", type=int, default=64, help="synthetic images")
    p.add_argument("--stores", nargs="+", choices=("raw", "jpg"), default=None,
                   help="image modes of the stores timed (default: both; --quick: raw)")
    p.add_argument("--size", type=int, nargs=2, default=(854, 480), metavar=("W", "H"),
                   help="synthetic image size")
    add_run_args(p, "16 small synthetic images, 1 repeat, the raw store only")
    add_data_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.size, args.samples, args.warmup, args.repeats = 16, (160, 96), 32, 8, 1
        args.check, args.stores = 4, args.stores or ("raw",)
    args.stores = args.stores or ("raw", "jpg")
    if "raw" not in args.stores:
        p.error("--stores: the raw store is the one whose pixels are checked; include it")
    from pipeline.loading.ffcv import require_ffcv

    require_ffcv()  # says how to install it
    return run_and_report(args, run, print_table, "ffcv_vs_wds_")


if __name__ == "__main__":
    sys.exit(main())
