"""Turn an official dataset layout into WebDataset shards + a parquet catalog.

    python launch/preprocess.py davis2016 --src DAVIS --out shards/ --workers 4
    sbatch --array=0-63 launch/slurm/preprocess.sbatch ilsvrc_vid --src ILSVRC2015 --out shards/

The contract is pipeline/lake/contract.py (docs/architecture.md); the data-lake layout is in shards/README.md.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from pipeline.cli import common
from pipeline.lake.store import locate
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.sources import SOURCES


NAME = "stcnn-preprocess"


def parse_args(argv=None) -> tuple[PreprocessConfig, bool]:
    p = common.parser(NAME, __doc__)
    p.add_argument("dataset", choices=sorted(SOURCES), help="the dataset's official layout")
    p.add_argument("--src", required=True, type=Path, help="dataset root in its official layout")
    p.add_argument("--out", default="shards",
                   help="data lake root: a folder or s3://bucket/prefix "
                        "(credentials and endpoint from AWS_* env vars; see shards/README.md)")
    p.add_argument("--staging", type=Path, default=None,
                   help="with --out s3://...: local folder the sets are written to before upload "
                        "(default: a temporary one; keep one to let re-runs skip finished shards)")
    p.add_argument("--split", nargs="+", action="extend", dest="splits", metavar="SPLIT",
                   help="splits to convert, e.g. --split train val (default: every split the "
                        "source lists)")
    p.add_argument("--delta", type=int, default=4, help="previous frames per clip (paper: 4)")
    p.add_argument("--clip-stride", type=int, default=1,
                   help="keep every k-th clip of a sequence (bounds storage amplification)")
    p.add_argument("--shard-max-count", type=int, default=256, help="samples per shard at most")
    p.add_argument("--shard-max-bytes", type=int, default=512 * 1024 * 1024, help="bytes per shard at most")
    p.add_argument("--workers", type=int, default=1, help="parallel writer processes on this machine")
    p.add_argument("--task-index", type=int, default=None,
                   help="this task's index: it writes the shards i with i %% N == index "
                        "(default $SLURM_ARRAY_TASK_ID itself, else 0)")
    p.add_argument("--num-tasks", type=int, default=None,
                   help="N, the number of tasks sharing the work (default $SLURM_ARRAY_TASK_COUNT "
                        "of an array 0..COUNT-1, else 1); to re-run some ids of an array, "
                        "pass the whole array's size")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="bad input: stop with an error (raise) or skip it and count it")
    p.add_argument("--verify", choices=["header", "decode"], default="header",
                   help="header: check JPEG markers and sizes (fast); decode: decode every frame")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON lines only")
    a = p.parse_args(argv)
    cfg = PreprocessConfig(dataset=a.dataset, src=a.src, out=locate(a.out), staging=a.staging, splits=a.splits, delta=a.delta,
                           clip_stride=a.clip_stride, shard_max_count=a.shard_max_count,
                           shard_max_bytes=a.shard_max_bytes, workers=a.workers,
                           task_index=a.task_index, num_tasks=a.num_tasks, on_error=a.on_error,
                           verify=a.verify, progress=not a.no_progress and sys.stderr.isatty())
    return cfg, a.json


@common.command(NAME)
def main(argv=None) -> int:
    cfg, as_json = parse_args(argv)
    summaries = run_preprocess(cfg)
    for s in summaries:
        if as_json:
            print(json.dumps(s, sort_keys=True))
            continue
        state = "complete, catalog written" if s["catalog"] else f"{s['shards_unfinished']} shard(s) left to other tasks"
        print(f"{s['dataset']}/{s['split']}: task {s['task']}: {s['shards_written']} shard(s) written, "
              f"{s['shards_already_finished']} already finished, {s['samples_this_task']} samples, "
              f"{s['written_bytes'] / 1e6:.1f} MB in {s['seconds']:.1f} s"
              + (f" ({s['mb_per_s']} MB/s)" if s['mb_per_s'] else "")
              + f"; storage amplification {s['amplification']}x; {state} -> {s['dir']}")
        if s.get("upload"):
            u = s["upload"]
            print(f"  uploaded to {u['url']}: {u['shards_uploaded']} shard(s) uploaded, "
                  f"{u['shards_skipped']} already there, {u['shards_unfinished']} unfinished "
                  f"(not uploaded), {u['bytes_uploaded'] / 1e6:.1f} MB")
        if s["failures"] or s["listing_skips"]:
            print(f"  skipped (counted): {s['failures'] or ''} {s['listing_skips'] or ''}")
            counts = collections.Counter(msg for _, msg in s["skipped_files"])
            for msg, n in list(counts.items())[:20]:
                print(f"    {msg}" + (f" (x{n} samples)" if n > 1 else ""))
            if len(counts) > 20:
                print(f"    ... {len(counts) - 20} more (see --json)")
    return 0
