"""Score segmentation results with the official DAVIS protocol, or on YouTube-Objects.

    python launch/evaluate.py --davis-root DAVIS --results out/val --year 2016 --split val --out eval/
    python launch/evaluate.py --davis-root DAVIS2017 --results out/val --year 2017 --out eval/ --workers 8
    python launch/evaluate.py --youtube-objects-root YTO --results out/yto --out eval/

DAVIS results are ``<results>/<sequence>/<frame>.png`` (2016: 0/255 or indexed, foreground >
0; 2017: indexed PNGs of object ids). Writes ``global_results-<split>.csv`` and
``per-sequence_results-<split>.csv`` as davis2017-evaluation does, a bar plot, and for 2016 the
temporal stability T (``per-sequence_T-<split>.csv``, ``global_T-<split>.csv``; off with
``--no-temporal``). The contract is in docs/architecture.md; the protocol is documented in
pipeline/evaluation/davis.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.cli import common
from pipeline.evaluation.davis import default_workers, evaluate_davis, format_tables, write_outputs
from pipeline.evaluation.davis import GLOBAL_COLUMNS
from pipeline.evaluation import youtube_objects as yto


NAME = "stcnn-evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(NAME, __doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--davis-root", type=Path, help="DAVIS root (Annotations/, ImageSets/, ...)")
    src.add_argument("--youtube-objects-root", type=Path,
                     help="YouTube-Objects root (v1/ and youtube_masks/)")
    p.add_argument("--results", required=True, type=Path, help="results folder")
    p.add_argument("--year", type=int, choices=(2016, 2017), help="DAVIS version (required with "
                   "--davis-root)")
    p.add_argument("--split", default="val", help="DAVIS split")
    p.add_argument("--out", required=True, type=Path, help="folder for the CSVs and the plot")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel processes (default: the CPUs available)")
    p.add_argument("--sequences", nargs="+", default=None, help="only these sequences (DAVIS)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--temporal", dest="temporal", action="store_true", default=None,
                   help="compute the DAVIS-2016 temporal stability T (default with --year 2016)")
    t.add_argument("--no-temporal", dest="temporal", action="store_false",
                   help="skip T (J and F only; much faster)")
    p.add_argument("--decay-index", choices=("uint8", "int"), default="uint8",
                   help="decay bins: 'uint8' reproduces the official tool (wraps around past 256 "
                        "frames), 'int' uses the true indices (default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="do not write the bar plot")
    p.add_argument("--json", action="store_true", help="also print the global row as JSON")
    return p


@common.command(NAME)
def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    workers = a.workers if a.workers is not None else default_workers()
    t0 = time.perf_counter()
    if a.youtube_objects_root is not None:
        rep = yto.evaluate_youtube_objects(a.youtube_objects_root, a.results, workers=workers)
        paths = yto.write_outputs(rep, a.out, plot=not a.no_plot)
        print(yto.format_table(rep))
        if a.json:
            print(json.dumps({"mean_iou": rep.mean(),
                              "per_category": {c: m for c, m, _, _ in rep.per_category()}}))
    else:
        if a.year is None:
            parser.error("--year is required with --davis-root")
        if a.temporal and a.year != 2016:
            parser.error("--temporal: T is a DAVIS-2016 measure (use --year 2016)")
        rep = evaluate_davis(a.davis_root, a.results, a.year, a.split, workers=workers,
                             temporal=a.temporal, decay_index=a.decay_index,
                             sequences=a.sequences)
        paths = write_outputs(rep, a.out, plot=not a.no_plot)
        print(format_tables(rep))
        if a.json:
            print(json.dumps(dict(zip(GLOBAL_COLUMNS, rep.global_row()))))
    dt = time.perf_counter() - t0
    print(f"\nwrote {', '.join(str(p) for p in paths.values())} ({dt:.1f} s)", file=sys.stderr)
    return 0
