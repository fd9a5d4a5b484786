#!/usr/bin/env python
"""Parameters per branch and FLOPs per forward pass of a model config, beside the authors' counts.

    python launch/model_info.py --config configs/model/stcnn.yaml
    python launch/model_info.py --config configs/model/stcnn_code.yaml --json
    python launch/model_info.py --config configs/model/tiny.yaml --height 64 --width 96 \
        spatial.channels=32

Runs on PyTorch's meta device (shapes only): a second or so at 854x480, no weights read.
"""

import sys

from pipeline.cli.model_info import main

if __name__ == "__main__":
    sys.exit(main())
