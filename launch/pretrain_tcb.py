#!/usr/bin/env python
"""Adversarial pretraining of the temporal coherence branch (G and D) on ILSVRC VID clips.

    python launch/pretrain_tcb.py [--config configs/pretrain_tcb.yaml] [key=value ...]
    python launch/pretrain_tcb.py --print-config [key=value ...]   # the resolved config, its keys
    torchrun --nproc_per_node=8 launch/pretrain_tcb.py data.lake=/data/shards
    torchrun --nnodes=$N --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=$HEAD:29500 \
        --rdzv-id=$JOB launch/pretrain_tcb.py ...                                  # multi-node
    deepspeed --num_gpus 8 launch/pretrain_tcb.py dist.engine=deepspeed dist.zero_stage=2
    python launch/pretrain_tcb.py --config configs/tiny/pretrain_tcb.yaml               # CPU, synthetic lake

Resumes from the latest checkpoint of run_dir; logs to MLflow ($MLFLOW_TRACKING_URI or a local
sqlite store) from rank 0. See pipeline/train/runner.py and configs/pretrain_tcb.yaml.
"""

import sys

from pipeline.cli.train import main

if __name__ == "__main__":
    sys.exit(main(["pretrain_tcb", *sys.argv[1:]]))
