"""Summarise a data lake, validate its shards, or rebuild a set's catalog.parquet.

    python launch/catalog.py shards/                 # table of datasets, splits, samples, bytes
    python launch/catalog.py shards/ --validate      # every shard readable and checksummed
    python launch/catalog.py shards/davis2016/train --rebuild
    python launch/catalog.py s3://bucket/lake --validate   # a lake on object storage (copied to
                                                          # a temporary folder first; tars only
                                                          # for --validate)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pipeline.cli import common
from pipeline.lake import store as objectstore
from pipeline.lake.catalog import find_sets, read_manifest, summarize, validate_set, write_catalog, finished

COLUMNS = ["dataset", "split", "kind", "shards", "shards_finished", "samples", "sequences",
           "bytes", "amplification", "delta", "clip_stride", "failures", "complete"]


def table(rows: list[dict]) -> str:
    cells = [[str(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(COLUMNS)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths))  # noqa: E731
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths])] + [line(x) for x in cells])


NAME = "stcnn-catalog"
FIX = "build the lake with stcnn-preprocess, or pass its root (e.g. shards/)"


@common.command(NAME, errors=(FileNotFoundError, ValueError, objectstore.ObjectStoreError),
                fix=FIX)
def main(argv=None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument("root",
                   help="data lake root (e.g. shards/), one shard set, or s3://bucket/prefix")
    p.add_argument("--validate", action="store_true", help="check every finished shard")
    p.add_argument("--quick", action="store_true", help="with --validate: sizes and counts only")
    p.add_argument("--rebuild", action="store_true", help="rewrite catalog.parquet of complete sets")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = p.parse_args(argv)
    if not objectstore.is_s3(a.root):
        if not Path(a.root).exists():
            raise common.UserError(f"{a.root} does not exist",
                                   "pass the lake root (the --out of stcnn-preprocess) or one "
                                   "shard set <root>/<dataset>/<split>")
        return report(a, a.root, show=str)
    if a.rebuild:
        raise common.UserError("--rebuild works on a local lake only",
                               "rebuild the staging folder of stcnn-preprocess and run it again "
                               "with the same --out (it uploads the new catalog.parquet)")
    url = objectstore.normalize(a.root).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="stcnn-catalog-") as tmp:
        try:
            objectstore.download_prefix(url, tmp, tars=a.validate)
            return report(a, tmp, show=lambda x: str(x).replace(tmp, url))
        except (FileNotFoundError, ValueError) as e:
            raise common.UserError(*common.split_fix(ValueError(str(e).replace(tmp, url)),
                                                     FIX)) from e


def report(a: argparse.Namespace, root: str, show) -> int:
    """Summary table (and validation) of the lake at ``root``; paths printed through ``show``."""
    rows = summarize(root)
    if a.rebuild:
        for s in find_sets(root):
            n = read_manifest(s)["n_shards"]
            if all(finished(s, n)):
                print(f"rebuilt {write_catalog(s, n)}")
            else:
                print(f"{s}: not complete ({finished(s, n).count(False)} unfinished shards); skipped")
        rows = summarize(root)
    print(show(json.dumps(rows, indent=1) if a.json else table(rows)))
    if not a.validate:
        return 0
    bad = 0
    for s in find_sets(root):
        v = validate_set(s, deep=not a.quick)
        bad += not v.ok
        status = "OK" if v.ok else "FAILED"
        print(show(f"{status} {s}: {v.shards_checked} shards, {v.samples_checked} samples checked"
                   + (f", unfinished: {v.unfinished}" if v.unfinished else "")))
        for e in v.errors:
            print(show(f"  - {e}"))
    return 1 if bad else 0
