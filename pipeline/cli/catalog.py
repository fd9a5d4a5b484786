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
import sys
import tempfile

from pipeline.lake import store as objectstore
from pipeline.lake.catalog import find_sets, read_manifest, summarize, validate_set, write_catalog, finished

COLUMNS = ["dataset", "split", "kind", "shards", "shards_finished", "samples", "sequences",
           "bytes", "amplification", "delta", "clip_stride", "failures", "complete"]


def table(rows: list[dict]) -> str:
    cells = [[str(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(COLUMNS)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths))  # noqa: E731
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths])] + [line(x) for x in cells])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="data lake root (e.g. shards/) or one shard set")
    p.add_argument("--validate", action="store_true", help="check every finished shard")
    p.add_argument("--quick", action="store_true", help="with --validate: sizes and counts only")
    p.add_argument("--rebuild", action="store_true", help="rewrite catalog.parquet of complete sets")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not objectstore.is_s3(a.root):
        return report(a, a.root, show=str)
    if a.rebuild:
        print("catalog: error: --rebuild works on a local lake: rebuild the staging folder of "
              "launch/preprocess.py and run it again with the same --out (it uploads the new "
              "catalog.parquet)", file=sys.stderr)
        return 2
    url = objectstore.normalize(a.root).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="stcnn-catalog-") as tmp:
        try:
            objectstore.download_prefix(url, tmp, tars=a.validate)
        except (FileNotFoundError, objectstore.ObjectStoreError) as e:
            print(f"catalog: error: {e}", file=sys.stderr)
            return 2
        return report(a, tmp, show=lambda x: str(x).replace(tmp, url))


def report(a: argparse.Namespace, root: str, show) -> int:
    """Summary table (and validation) of the lake at ``root``; paths printed through ``show``."""
    try:
        rows = summarize(root)
    except (FileNotFoundError, ValueError) as e:
        print(f"catalog: error: {show(e)}", file=sys.stderr)
        return 2
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
