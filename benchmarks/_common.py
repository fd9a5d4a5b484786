"""Helpers shared by the benchmarks: where the DAVIS data is, which sequences and files it has.

The benchmarks run on the DAVIS-2016 root given with ``--davis-root``, and otherwise on synthetic
854x480 data written into a temporary folder.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPLITS = ("train", "val")  # disjoint: together they hold every sequence once


def find_davis(explicit: str | os.PathLike | None = None) -> Path | None:
    """The DAVIS-2016 root given, or None when none was (pipeline.sources.davis)."""
    from pipeline.sources.davis import find_davis as find

    return find(explicit)


def synthetic_davis(root: Path, n_sequences: int, n_frames: int) -> Path:
    """Synthetic DAVIS-2016 layout at 854x480 (``n_sequences`` per split)."""
    from pipeline.synthetic import SyntheticSpec, write_dataset

    spec = SyntheticSpec(size=(854, 480), n_sequences=n_sequences, n_frames=n_frames)
    return write_dataset("davis2016", root, spec)


def davis_source(explicit, tmp: Path, force_synthetic: bool, n_sequences: int = 1,
                 n_frames: int = 50) -> tuple[Path, str]:
    """(root, description): the root given, or synthetic data written under ``tmp``."""
    root = None if force_synthetic else find_davis(explicit)
    if root is not None:
        return root, f"real DAVIS-2016 data ({root.name}/)"
    root = synthetic_davis(tmp / "synthetic_davis", n_sequences, n_frames)
    return root, f"synthetic DAVIS-2016 layout, 854x480, {n_sequences} sequence(s) per split"


def split_sequences(root: Path, split: str) -> list[str]:
    """Sequence names of a split, from ``ImageSets/2016/<split>.txt`` (names, DAVIS-2017 package)
    or ``ImageSets/480p/<split>.txt`` (frame/annotation path pairs, DAVIS-2016 release)."""
    names_file = root / "ImageSets" / "2016" / f"{split}.txt"
    if names_file.is_file():
        return [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
    seqs: list[str] = []
    for line in (root / "ImageSets" / "480p" / f"{split}.txt").read_text().splitlines():
        if line.strip():
            seq = Path(line.split()[0]).parent.name
            if seq not in seqs:
                seqs.append(seq)
    return seqs


def sequences(root: Path, splits=SPLITS) -> list[str]:
    return [s for split in splits for s in split_sequences(root, split)]


def source_files(root: Path, seqs: list[str]) -> list[Path]:
    """Every frame and annotation file of the sequences, relative to ``root``, sorted."""
    out: list[Path] = []
    for sub in ("JPEGImages", "Annotations"):
        for seq in seqs:
            d = root / sub / "480p" / seq
            out += sorted(p.relative_to(root) for p in d.iterdir() if p.is_file())
    return out


def warm_page_cache(root: Path, files: list[Path]) -> int:
    """Read every file once (so both sides of a comparison start from a warm cache)."""
    total = 0
    for f in files:
        total += len((root / f).read_bytes())
    return total


def summarise(values: list[float]) -> dict:
    return {"best": max(values), "median": statistics.median(values), "runs": values}


def run_and_report(args, run, print_table, prefix: str) -> int:
    """Run a benchmark in a temporary folder (removed after) and print its table or JSON."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix, dir=args.tmp_dir) as tmp:
        result = run(args, Path(tmp))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_table(result)
    return 0


def add_run_args(p, quick_help: str = "tiny run (smoke test)") -> None:
    """The options every benchmark takes: --quick, --json, --tmp-dir."""
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--tmp-dir", help="temporary folder for the outputs (default: system temp)")


def add_data_args(p) -> None:
    """The data options every data-path benchmark takes."""
    p.add_argument("--davis-root", help="DAVIS-2016 root (default: none, synthetic 854x480 "
                                        "data)")
    p.add_argument("--synthetic", action="store_true",
                   help="use synthetic data even if DAVIS is there")
