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
import tempfile
from pathlib import Path

from pipeline.cli import common
from pipeline.lake import store as objectstore
from pipeline.loading.ffcv.format import INSTALL_HINT, FFCVUnavailable, require_ffcv
from pipeline.loading.ffcv.store import write_beton


NAME = "stcnn-ffcv-store"


@common.command(NAME, errors=(FileNotFoundError, ValueError, RuntimeError))
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
    try:
        require_ffcv()
    except FFCVUnavailable as e:
        raise common.UserError(f"FFCV cannot be imported ({e.__cause__ or e})",
                               INSTALL_HINT) from e
    if not objectstore.is_s3(args.lake):
        summary = _write(args, Path(args.lake))
    elif args.staging:
        summary = _write(args, _download(args, Path(args.staging)))
    else:
        with tempfile.TemporaryDirectory(prefix="stcnn-ffcv-sets-") as tmp:
            summary = _write(args, _download(args, Path(tmp)))
    print(json.dumps(summary, default=str))
    return 0


def _download(args: argparse.Namespace, dest: Path) -> Path:
    """Copy the finished shards of the sets of an s3:// lake to ``dest/<dataset>/<split>``."""
    lake = objectstore.normalize(args.lake).rstrip("/")
    for s in args.sets:
        objectstore.download_prefix(objectstore.join(lake, s), dest / s)
    return dest


def _write(args: argparse.Namespace, lake: Path) -> dict:
    return write_beton([lake / s for s in args.sets], args.out, num_workers=args.workers,
                       max_resolution=args.max_resolution, image_mode=args.image_mode,
                       overwrite=args.overwrite, progress=sys.stderr.isatty())
