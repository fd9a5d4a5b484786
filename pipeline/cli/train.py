"""``stcnn-train PHASE [--config FILE] [key=value ...]``: one training phase of the paper's recipe
(the same run as ``launch/<phase>.py``, which is what torchrun and deepspeed start).

    stcnn-train pretrain_tcb --config configs/tiny/pretrain_tcb.yaml
    torchrun --nproc_per_node=8 launch/pretrain_tcb.py          # the same phase on 8 ranks
"""

from __future__ import annotations

import sys

from pipeline.train.runner import main as run_main

# phase command -> (runner phase, default config, what it trains)
PHASES = {
    "pretrain_tcb": ("gan", "configs/pretrain_tcb.yaml",
                     "Adversarial pretraining of the temporal coherence branch (G and D)"),
    "pretrain_ssb": ("segmentation", "configs/pretrain_ssb.yaml",
                     "Pretraining of the spatial segmentation branch"),
    "train_offline": ("alternating", "configs/train_offline.yaml",
                      "Alternating offline training of both branches"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in PHASES:
        print(f"usage: stcnn-train {{{','.join(PHASES)}}} [--config FILE] [key=value ...]",
              file=sys.stderr)
        return 2
    phase, config, what = PHASES[argv[0]]
    return run_main(phase, config, what, argv[1:])
