#!/usr/bin/env python
"""Cluster preflight: environment, NCCL/gloo, each phase at the paper configuration (step time,
memory, MFU, compile), bf16 vs fp32, online s/frame, loader decode; a table and preflight.json.

    python launch/preflight.py [--device cpu --quick]
    torchrun --nproc_per_node=8 launch/preflight.py

Options: ``python launch/preflight.py --help`` (pipeline/cli/preflight.py); README "Before a long run".
"""

import sys

from pipeline.cli.preflight import main

if __name__ == "__main__":
    sys.exit(main())
