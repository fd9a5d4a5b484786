#!/usr/bin/env python
"""Parameters per branch and FLOPs per forward pass of a model config, beside the authors' counts.

The same as ``stcnn-model-info``; usage and options: ``python launch/model_info.py --help`` (pipeline/cli/model_info.py).
"""

import sys

from pipeline.cli.model_info import main

if __name__ == "__main__":
    sys.exit(main())
