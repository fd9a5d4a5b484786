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
from pathlib import Path

from pipeline.cli import common
from pipeline.core.errors import PipelineError
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


@common.command(NAME, fix=FIX)
def main(argv=None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument("root",
                   help="data lake root (e.g. shards/), one shard set, or s3://bucket/prefix")
    p.add_argument("--validate", action="store_true", help="check every finished shard")
    p.add_argument("--quick", action="store_true", help="with --validate: sizes and counts only")
    p.add_argument("--rebuild", action="store_true", help="rewrite catalog.parquet of complete sets")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = p.parse_args(argv)
    try:  # a lake on the object store: copied to a temporary folder first (tars for --validate)
        with objectstore.local_copy(a.root, tars=a.validate, rewrite=a.rebuild,
                                    prefix="stcnn-catalog-") as copy:
            if not Path(copy.path).exists():
                raise PipelineError(f"{a.root} does not exist",
                                    "pass the lake root (the --out of stcnn-preprocess) or one "
                                    "shard set <root>/<dataset>/<split>")
            try:
                return report(a, copy.path, show=copy.show)
            except PipelineError as e:  # named by the lake, not by a local copy of it
                if copy.show(str(e)) == str(e):
                    raise
                raise PipelineError(copy.show(str(e))) from e
    except objectstore.NotLocalError as e:
        raise PipelineError("--rebuild works on a local lake only",
                            "rebuild the staging folder of stcnn-preprocess and run it again "
                            "with the same --out (it uploads the new catalog.parquet)") from e


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
