#!/usr/bin/env python
"""Write small synthetic datasets in the official on-disk layouts (docs/layouts.md).

    python launch/make_synthetic.py --out data/synthetic                      # all six, tiny
    python launch/make_synthetic.py --out data/synthetic --datasets davis2016,voc2012 --size full

Prints one line per dataset: its name, the root to pass as --src, and what was written.
"""

import sys

from pipeline.cli.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
