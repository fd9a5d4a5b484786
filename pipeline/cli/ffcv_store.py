"""Write an FFCV store (.beton) of image shard sets, for SSB pretraining with data.backend=ffcv.

    python launch/ffcv_store.py --lake shards --sets msra10k/train voc2012/train --out shards/ssb.beton
    python launch/pretrain_ssb.py data.backend=ffcv data.ffcv_store=shards/ssb.beton
    python launch/ffcv_store.py --lake s3://bucket/shards --sets msra10k/train --out /scratch/ssb.beton \
        [--staging /scratch/sets]    # a lake on object storage: the sets are copied locally first

Needs the ``ffcv`` extra (``pip install -e .[ffcv]`` after
``apt-get install -y pkg-config libopencv-dev libturbojpeg0-dev``; scripts/setup.sh does both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.cli import common
from pipeline.lake import store as objectstore
from pipeline.loading.ffcv.format import require_ffcv
from pipeline.loading.ffcv.store import write_beton


NAME = "stcnn-ffcv-store"


@common.command(NAME)
def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument("--lake", default="shards",
                   help="data lake root (a folder or s3://bucket/prefix)")
    p.add_argument("--sets", nargs="+", required=True, help="<dataset>/<split> under the lake")
    p.add_argument("--out", required=True, help="the .beton file to write")
    p.add_argument("--workers", type=int, default=1, help="parallel writer processes")
    p.add_argument("--max-resolution", type=int, default=None,
                   help="shrink samples whose longer side exceeds this (default: keep sizes)")
    p.add_argument("--image-mode", choices=["raw", "jpg"], default="raw",
                   help="how images are stored: raw pixels (fast to load) or JPEG (smaller)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--staging", default=None,
                   help="with an s3:// lake: where the sets are copied (default: a temporary "
                        "folder, removed afterwards)")
    args = p.parse_args(argv)
    require_ffcv()                  # before anything is read or written
    # a lake on the object store: its sets copied to --staging or a temporary folder first
    with objectstore.local_copy(args.lake, sets=args.sets, staging=args.staging or None,
                                prefix="stcnn-ffcv-sets-") as copy:
        summary = _write(args, Path(copy.path))
    print(json.dumps(summary, default=str))
    return 0


def _write(args: argparse.Namespace, lake: Path) -> dict:
    return write_beton([lake / s for s in args.sets], args.out, num_workers=args.workers,
                       max_resolution=args.max_resolution, image_mode=args.image_mode,
                       overwrite=args.overwrite, progress=sys.stderr.isatty())
