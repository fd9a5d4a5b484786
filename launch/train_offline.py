#!/usr/bin/env python
"""Alternating offline training of both branches on DAVIS-2016 train.

    python launch/train_offline.py [--config configs/train_offline.yaml] [key=value ...]
    python launch/train_offline.py --print-config [key=value ...]   # the resolved config, its keys
    torchrun --nproc_per_node=8 launch/train_offline.py data.lake=/data/shards
    torchrun --nnodes=$N --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=$HEAD:29500 \
        --rdzv-id=$JOB launch/train_offline.py ...                                  # multi-node
    deepspeed --num_gpus 8 launch/train_offline.py dist.engine=deepspeed dist.zero_stage=2
    python launch/train_offline.py --config configs/tiny/train_offline.yaml               # CPU, synthetic lake

Resumes from the latest checkpoint of run_dir; logs to MLflow ($MLFLOW_TRACKING_URI or a local
sqlite store) from rank 0. See pipeline/train/runner.py and configs/train_offline.yaml.
"""

import sys

from pipeline.cli.train import main

if __name__ == "__main__":
    sys.exit(main(["train_offline", *sys.argv[1:]]))
