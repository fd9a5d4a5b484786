#!/usr/bin/env python
"""The whole pipeline end to end on its embedded default (see pipeline/jobs/demo.py):
generated data -> shards -> GAN pretraining -> SSB pretraining -> alternating training ->
online tuning + segmentation -> evaluation, tracked in a local MLflow store.

    python launch/demo.py                                   # configs/demo.yaml
    python launch/demo.py out=/tmp/demo steps.gan=100 segment.iterations=200
"""

import sys

from pipeline.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
