#!/usr/bin/env python
"""Write small synthetic datasets in the official on-disk layouts (docs/layouts.md).

The same as ``stcnn-synthetic``; usage and options: ``python launch/make_synthetic.py --help`` (pipeline/cli/make_synthetic.py).
"""

import sys

from pipeline.cli.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
