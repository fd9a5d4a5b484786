#!/usr/bin/env python
"""Seconds per frame of online tuning and of inference (``pipeline/inference/segmenter.py``), against the
paper's 3.90 s/frame (Table 1: STCNN on one GPU, tuning + segmentation of DAVIS-2016 val).

    python benchmarks/online_speed.py                     # tiny model, CPU, real DAVIS if present
    python benchmarks/online_speed.py --model configs/model/stcnn.yaml --device cuda --size 480 854 \
        --iterations 400 --dreams 100                      # the paper's setting, on a GPU
    python benchmarks/online_speed.py --quick --json

Per sequence: lucid dreams of the first frame, ``--iterations`` SGD steps of the SSB (batch 1),
then every later frame segmented from its 4 previous frames. Reported per segmented frame (the
first frame excluded): tuning s/frame (dreams + tuning, divided over the sequence's frames, as
the paper amortises it), inference s/frame, and their sum over the paper's 3.90 s/frame.
Weights are random (speed does not depend on them). Data: the DAVIS-2016 root given with
``--davis-root``, else synthetic 854x480 sequences.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, find_davis, run_and_report  # noqa: E402

PAPER_S_PER_FRAME = 3.90


def _sequences(args, tmp: Path) -> list[tuple[str, list[np.ndarray], np.ndarray]]:
    from PIL import Image

    root = None if args.synthetic else find_davis(args.davis_root)
    if root is None:
        from pipeline.synthetic import SyntheticSpec, write_dataset
        root = write_dataset("davis2016", tmp / "davis", SyntheticSpec(
            size=(854, 480), n_sequences=1, n_frames=args.frames, n_images=1, seed=0))
    out = []
    for seq in sorted((root / "JPEGImages" / "480p").iterdir())[: args.sequences]:
        files = sorted(seq.glob("*.jpg"))[: args.frames]
        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        mask = np.asarray(Image.open(root / "Annotations" / "480p" / seq.name / "00000.png"))
        out.append((seq.name, frames, (mask > 0).astype(np.uint8)))
    return out


def run(args, tmp: Path) -> dict:
    import torch

    from pipeline.core.config import load_config
    from pipeline.model.config import ModelConfig
    from pipeline.model.stcnn import build_generator, build_ssb
    from pipeline.inference.segmenter import OnlineSegmenter
    from pipeline.inference.tuning import OnlineConfig

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    cfg = load_config(ModelConfig, args.model)
    weights = {"G": build_generator(cfg).state_dict(), "SSB": build_ssb(cfg).state_dict()}
    online = OnlineConfig(iterations=args.iterations, dreams=args.dreams,
                          size=list(args.size) if args.size else None)
    seg = OnlineSegmenter(cfg, weights, online, args.device)
    rows = []
    for name, frames, mask in _sequences(args, tmp):
        t0 = time.perf_counter()
        r = seg.segment(name, frames, mask)
        rows.append({"sequence": name, "frames": r.frames, **r.timing(),
                     "wall_s": time.perf_counter() - t0})
    n = sum(r["frames"] - 1 for r in rows)
    tune = sum(r["tune_s"] for r in rows) / n
    infer = sum(r["infer_s"] for r in rows) / n
    return {"model": str(args.model), "device": args.device, "threads": args.threads,
            "size": args.size, "iterations": args.iterations, "dreams": args.dreams,
            "sequences": rows, "tune_s_per_frame": tune, "infer_s_per_frame": infer,
            "total_s_per_frame": tune + infer,
            "ratio_to_paper": (tune + infer) / PAPER_S_PER_FRAME}


def print_table(r: dict) -> None:
    print(f"online tuning + segmentation: {r['model']} on {r['device']} ({r['threads']} threads), "
          f"size {r['size'] or 'native'}, {r['iterations']} iterations, {r['dreams']} dreams")
    print(f"{'sequence':<14}{'frames':>7}{'tune s/frame':>14}{'infer s/frame':>15}")
    for s in r["sequences"]:
        print(f"{s['sequence']:<14}{s['frames']:>7}{s['tune_s_per_frame']:>14.3f}"
              f"{s['infer_s_per_frame']:>15.4f}")
    print(f"{'all':<14}{'':>7}{r['tune_s_per_frame']:>14.3f}{r['infer_s_per_frame']:>15.4f}")
    print(f"total {r['total_s_per_frame']:.3f} s/frame = {r['ratio_to_paper']:.3f}x the paper's "
          f"{PAPER_S_PER_FRAME} s/frame (lower is faster; the paper: full model, one GPU)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "configs" / "model" / "tiny.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, nargs=2, default=[240, 427], metavar=("H", "W"))
    p.add_argument("--native", action="store_true", help="tune and segment at the video's size")
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--dreams", type=int, default=100)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--sequences", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--davis-root")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--quick", action="store_true", help="1 sequence, 8 frames, 20 iterations")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tmp-dir")
    args = p.parse_args(argv)
    if args.native:
        args.size = None
    if args.quick:
        args.sequences, args.frames, args.iterations, args.dreams = 1, 8, 20, 4
    return run_and_report(args, run, print_table, "online_speed_")


if __name__ == "__main__":
    sys.exit(main())
