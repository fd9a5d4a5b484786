#!/usr/bin/env python
"""Write docs/scale.md, the capacity plan of the paper's recipe on N GPUs, from figures that each
name their source:

  published  benchmarks/results/datasets.yaml: the datasets' frames, sequences, images and
             archive bytes, each with its reference
  measured   benchmarks/results/*.json: the benchmarks' and the preflight's own output, kept with
             the command and date that produced it (benchmarks/results/record.py)
  config     the recipe's configs, the SLURM scripts and the job's defaults, read from the files
  assumed    the MFU, interconnect, storage and CPU figures: options below, each printed as an
             assumption (the GPU is an option too; its dense peak comes from the vendor figures
             of pipeline/preflight/peaks.py)

    python scripts/capacity_plan.py                      # writes docs/scale.md
    python scripts/capacity_plan.py --check              # exit 1 if docs/scale.md is stale
    python scripts/capacity_plan.py --gpu a100 --mfu 0.3 --out -

The output depends on these inputs only (no clock, no machine): the same inputs give the same
bytes, which tests/unit/test_capacity_plan.py checks against the committed docs/scale.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.core.errors import PipelineError  # noqa: E402
from scripts.capacity.document import REGENERATE  # noqa: E402
from scripts.capacity.inputs import build  # noqa: E402
from scripts.capacity.sources import RESULTS  # noqa: E402

OUT = "docs/scale.md"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=OUT, help=f"the document (default {OUT}; '-' for stdout)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when --out differs from what would be written")
    p.add_argument("--results", default=RESULTS, help="the folder of the inputs")
    p.add_argument("--gpus", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 8, 64, 512], help="GPU counts planned (default 1,8,64,512)")
    p.add_argument("--gpu", default="h100 sxm",
                   help="a device of pipeline/preflight/peaks.py (default 'h100 sxm')")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--mfu", type=float, default=0.35, help="assumed MFU (default 0.35)")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--loader-cores", type=float, default=None,
                   help="CPU cores per GPU for the loader (default: launch/slurm/train.sbatch's "
                        "CPUs per GPU, less one)")
    p.add_argument("--busbw-intra", type=float, default=350.0,
                   help="all-reduce bus bandwidth within a node, GB/s (default 350: NVLink)")
    p.add_argument("--busbw-inter", type=float, default=40.0,
                   help="across nodes, GB/s (default 40: one 400 Gb/s InfiniBand link per GPU)")
    p.add_argument("--checkpoint-gbs", type=float, default=1.0,
                   help="GB/s rank 0 writes a checkpoint at (default 1: a shared filesystem)")
    p.add_argument("--checkpoint-budget", type=float, default=0.05,
                   help="share of the time between checkpoints they may take (default 0.05)")
    p.add_argument("--s3-get-limit", type=float, default=5500.0,
                   help="GET/HEAD requests per second per prefix (default 5500: AWS S3)")
    p.add_argument("--s3-ratio", type=float, default=None,
                   help="loader rate from S3 / from local disk (default: measured, s3.json)")
    p.add_argument("--clip-stride", type=int, default=1)
    p.add_argument("--tasks", type=int, default=64, help="SLURM array tasks (default 64)")
    p.add_argument("--fs-gbs", type=float, default=10.0,
                   help="aggregate GB/s of the storage preprocessing reads and writes (default 10)")
    p.add_argument("--cores-per-task", type=int, default=None,
                   help="cores per array task (default: launch/slurm/preprocess.sbatch's)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        text = build(args)
    except PipelineError as e:
        print(f"capacity_plan: {e}", file=sys.stderr)
        return e.exit_status
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = REPO / args.out if not Path(args.out).is_absolute() else Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            print(f"{args.out} is stale: regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
