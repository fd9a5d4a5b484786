"""Write small synthetic datasets in the official on-disk layouts (docs/layouts.md).

    python launch/make_synthetic.py --out data/synthetic                      # all six, tiny
    python launch/make_synthetic.py --out data/synthetic --datasets davis2016 voc2012 --size full

Prints one line per dataset: its name, the root to pass as --src, and what was written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.cli import common
from pipeline.synthetic import (DATASETS, PRESETS, SyntheticSpec, parse_size,
                                     write_dataset_with_stats)


def _dataset(text: str) -> str:
    if text != "all" and text not in DATASETS:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {text!r}; valid: {' '.join(DATASETS)} or all")
    return text


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _objects(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        lo, hi = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--objects takes N or MIN,MAX, got {text!r}") from None
    return lo, hi


NAME = "stcnn-synthetic"


@common.command(NAME)
def main(argv: list[str] | None = None) -> int:
    d = SyntheticSpec()
    ap = common.parser(NAME, __doc__)
    ap.add_argument("--out", required=True, type=Path, help="folder; one subfolder per dataset")
    ap.add_argument("--datasets", type=_dataset, nargs="+", default=["all"], metavar="NAME",
                    help=f"datasets to write: any of {' '.join(DATASETS)}, or all (default)")
    ap.add_argument("--size", type=_size, default=d.size,
                    help=f"{' | '.join(PRESETS)} | WxH (default tiny = {d.size[0]}x{d.size[1]})")
    ap.add_argument("--sequences", type=int, default=d.n_sequences,
                    help="video sequences per split (default %(default)s)")
    ap.add_argument("--frames", type=int, default=d.n_frames,
                    help="nominal frames per sequence, varies by +-2 (default %(default)s)")
    ap.add_argument("--images", type=int, default=d.n_images,
                    help="images per split for msra10k / voc2012 (default %(default)s)")
    ap.add_argument("--objects", type=_objects, default=d.n_objects,
                    help="objects per scene, N or MIN,MAX (default %s,%s)" % d.n_objects)
    ap.add_argument("--label-every", type=int, default=d.label_every,
                    help="youtube_objects: a mask every N-th frame (default %(default)s)")
    ap.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality, help="JPEG quality, 1-95")
    ap.add_argument("--test-dev", type=int, default=0,
                    help="davis2017: extra test-dev sequences, annotated on frame 0 only")
    ap.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same bytes)")
    args = ap.parse_args(argv)
    names = list(DATASETS) if "all" in args.datasets else list(dict.fromkeys(args.datasets))
    try:
        spec = SyntheticSpec(size=args.size, n_sequences=args.sequences, n_frames=args.frames,
                             n_images=args.images, n_objects=args.objects, seed=args.seed,
                             label_every=args.label_every, jpeg_quality=args.jpeg_quality,
                             test_dev_sequences=args.test_dev)
    except ValueError as e:
        ap.error(str(e))
    width = max(len(n) for n in names)
    for name in names:
        t0 = time.perf_counter()
        root, stats = write_dataset_with_stats(name, args.out / name, spec)
        counts = " ".join(f"{k}={v}" for k, v in stats.items())
        print(f"{name:<{width}}  {root}  {counts}  ({time.perf_counter() - t0:.2f}s)", flush=True)
    return 0
