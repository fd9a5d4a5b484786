#!/usr/bin/env python
"""Turn an official dataset layout into WebDataset shards + a parquet catalog.

    python launch/preprocess.py davis2016 --src DAVIS --out shards/ --workers 4
    sbatch --array=0-63 launch/slurm/preprocess.sbatch ilsvrc_vid --src ILSVRC2015 --out shards/

The contract is DESIGN.md section 4; the data-lake layout is in shards/README.md.
"""

import sys

from pipeline.cli.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
