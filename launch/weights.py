#!/usr/bin/env python
"""Write the ImageNet weight files of the model configs' ``weights`` keys.

The same as ``stcnn-weights``; usage and options: ``python launch/weights.py export --help``
(pipeline/cli/weights.py).

    python launch/weights.py export resnet101 --out /w/resnet101.pth
    python launch/weights.py export inception_v3 --out /w/inception_v3.pth
"""

import sys

from pipeline.cli.weights import main

if __name__ == "__main__":
    sys.exit(main())
