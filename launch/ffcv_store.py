#!/usr/bin/env python
"""Write an FFCV store (.beton) of image shard sets, for SSB pretraining with data.backend=ffcv.

    python launch/ffcv_store.py --lake shards --sets msra10k/train voc2012/train --out shards/ssb.beton
    python launch/pretrain_ssb.py data.backend=ffcv data.ffcv_store=shards/ssb.beton
    python launch/ffcv_store.py --lake s3://bucket/shards --sets msra10k/train --out /scratch/ssb.beton \
        [--staging /scratch/sets]    # a lake on object storage: the sets are copied locally first

Needs the ``ffcv`` extra (``pip install -e .[ffcv]`` after
``apt-get install -y pkg-config libopencv-dev libturbojpeg0-dev``; scripts/setup.sh does both).
"""

import sys

from pipeline.cli.ffcv_store import main

if __name__ == "__main__":
    sys.exit(main())
