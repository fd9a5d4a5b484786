#!/usr/bin/env python
"""Score segmentation results with the official DAVIS protocol, or on YouTube-Objects.

    python launch/evaluate.py --davis-root DAVIS --results out/val --year 2016 --split val --out eval/
    python launch/evaluate.py --davis-root DAVIS2017 --results out/val --year 2017 --out eval/ --workers 8
    python launch/evaluate.py --youtube-objects-root YTO --results out/yto --out eval/

DAVIS results are ``<results>/<sequence>/<frame>.png`` (2016: 0/255 or indexed, foreground >
0; 2017: indexed PNGs of object ids). Writes ``global_results-<split>.csv`` and
``per-sequence_results-<split>.csv`` as davis2017-evaluation does, a bar plot, and for 2016 the
temporal stability T (``per-sequence_T-<split>.csv``, ``global_T-<split>.csv``; off with
``--no-temporal``). The contract is DESIGN.md section 4; the protocol is documented in
pipeline/evaluation/davis.py.
"""

import sys

from pipeline.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
