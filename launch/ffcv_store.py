#!/usr/bin/env python
"""Write an FFCV store (.beton) of image shard sets, for SSB pretraining with data.backend=ffcv.

    python launch/ffcv_store.py --lake shards --sets msra10k/train voc2012/train --out shards/ssb.beton
    python launch/pretrain_ssb.py data.backend=ffcv data.ffcv_store=shards/ssb.beton

Needs the ``ffcv`` extra (``pip install -e .[ffcv]`` after
``apt-get install -y pkg-config libopencv-dev libturbojpeg0-dev``; scripts/setup.sh does both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from pipeline.data.ffcv_store import write_beton


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake", default="shards", help="data lake root (default: %(default)s)")
    p.add_argument("--sets", nargs="+", required=True, help="<dataset>/<split> under the lake")
    p.add_argument("--out", required=True, help="the .beton file to write")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-resolution", type=int, default=None,
                   help="shrink samples whose longer side exceeds this")
    p.add_argument("--image-mode", choices=["raw", "jpg"], default="raw")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    dirs = [Path(args.lake) / s for s in args.sets]
    try:
        summary = write_beton(dirs, args.out, num_workers=args.workers,
                              max_resolution=args.max_resolution, image_mode=args.image_mode,
                              overwrite=args.overwrite, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
