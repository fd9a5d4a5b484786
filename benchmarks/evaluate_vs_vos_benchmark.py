#!/usr/bin/env python
"""Frames/s of our DAVIS evaluation (J and F) against hkchengrex's vos-benchmark (PyPI
``vos-benchmark``) on the same predictions, in one run, with the same number of processes; the
per-sequence J and F of both must be identical at full precision (checked, printed).

Data: a DAVIS-2016 root (``--davis-root``, required: the 427x240 copy of the release or the
full-resolution one), split ``--split`` (val). Predictions are derived from the real ground truth so that both tools
see realistic errors: frame t is the annotation shifted by ((t mod 5) - 2, 3) pixels, eroded by
a 5x5 square on every 7th frame, emptied on every 23rd (0/255 PNGs, like the annotations).
They are written once into a temporary folder (removed after), with a folder of links to the
split's annotation folders as vos-benchmark's ground-truth root.

Contenders, ``--repeats`` times round-robin, best and median kept:
* ``ours``: :func:`pipeline.evaluation.davis.evaluate_davis` (what ``stcnn-evaluate`` runs),
  year 2016, J and F (T off, as vos-benchmark has none), ``--workers`` processes.
* ``vos-benchmark``: ``vos_benchmark.benchmark.benchmark([gt], [predictions],
  num_processes=--workers)``, as its README's Python example (verbose off).

Target: ours >= 3x vos-benchmark (best runs). Install: ``pip install --no-deps vos-benchmark``
(``scripts/setup.sh`` does; its declared ``opencv-python`` would replace the headless OpenCV).

    python benchmarks/evaluate_vs_vos_benchmark.py
    python benchmarks/evaluate_vs_vos_benchmark.py --workers 2 --json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.evaluation.davis import evaluate_davis, list_ground_truth  # noqa: E402

TARGET = 3.0


def perturb(mask: np.ndarray, t: int) -> np.ndarray:
    """The prediction of frame ``t``: the annotation shifted, sometimes eroded or emptied."""
    import cv2

    fg = mask > 0
    if t % 23 == 22:
        return np.zeros(mask.shape, np.uint8)
    dy, dx = (t % 5) - 2, 3
    out = np.zeros_like(fg)
    h, w = fg.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = fg[ys, xs]
    if t % 7 == 6:
        out = cv2.erode(out.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return (out * 255).astype(np.uint8)


def write_predictions(root: Path, split: str, tmp: Path) -> tuple[Path, Path, int]:
    """(vos-benchmark's ground-truth root of links, predictions root, evaluated frames)."""
    gt_root, pred_root = tmp / "gt", tmp / "predictions"
    gt_root.mkdir()
    evaluated = 0
    for name, paths in list_ground_truth(root, 2016, split):
        (gt_root / name).symlink_to(Path(paths[0]).parent.resolve(), target_is_directory=True)
        out = pred_root / name
        out.mkdir(parents=True)
        for t, p in enumerate(paths):
            gt = np.array(Image.open(p).convert("L"))
            Image.fromarray(perturb(gt, t), mode="L").save(out / Path(p).name)
        evaluated += max(0, len(paths) - 2)
    return gt_root, pred_root, evaluated


def run_ours(root: Path, preds: Path, split: str, workers: int) -> dict[str, tuple[float, float]]:
    rep = evaluate_davis(root, preds, 2016, split, workers=workers, temporal=False)
    return {s.name: (float(np.mean(s.J[0]) * 100), float(np.mean(s.F[0]) * 100))
            for s in rep.sequences}


def run_vos(gt_root: Path, preds: Path, workers: int) -> dict[str, tuple[float, float]]:
    from vos_benchmark.benchmark import benchmark

    with contextlib.redirect_stdout(io.StringIO()):
        *_, per_object = benchmark([str(gt_root)], [str(preds)], num_processes=workers,
                                   verbose=False)
    out = {}
    for name, (iou, bf) in per_object[0].items():
        (obj,) = iou  # DAVIS-2016: one object (id 255 in the 0/255 PNGs)
        out[name] = (float(iou[obj]), float(bf[obj]))
    return out


def run(args) -> dict:
    root = Path(args.davis_root)
    if not (root / "Annotations" / "480p").is_dir():
        raise SystemExit("no DAVIS-2016 root: pass --davis-root (the folder holding "
                         "Annotations/480p and ImageSets/480p)")
    with tempfile.TemporaryDirectory(prefix="evalvos_", dir=args.tmp_dir) as tmp:
        gt_root, preds, frames = write_predictions(root, args.split, Path(tmp))
        if args.quick:
            args.repeats = 1
        contenders = {"ours": lambda: run_ours(root, preds, args.split, args.workers),
                      "vos-benchmark": lambda: run_vos(gt_root, preds, args.workers)}
        seconds: dict[str, list[float]] = {k: [] for k in contenders}
        scores: dict[str, dict] = {}
        for _ in range(args.repeats):
            for name, fn in contenders.items():
                t0 = time.perf_counter()
                scores[name] = fn()
                seconds[name].append(time.perf_counter() - t0)
    ours, vos = scores["ours"], scores["vos-benchmark"]
    identical = sorted(ours) == sorted(vos) and all(ours[k] == vos[k] for k in ours)
    max_diff = max((abs(a - b) for k in ours if k in vos for a, b in zip(ours[k], vos[k])),
                   default=float("nan"))
    fps = {k: {"best": frames / min(v), "median": frames / float(np.median(v))}
           for k, v in seconds.items()}
    ratio = fps["ours"]["best"] / fps["vos-benchmark"]["best"]
    return {"benchmark": "evaluate_vs_vos_benchmark", "data": "/".join(root.resolve().parts[-2:]),
            "split": args.split, "sequences": len(ours), "evaluated_frames": frames,
            "workers": args.workers, "repeats": args.repeats, "frames_per_s": fps,
            "ratio": ratio,
            "ratio_median": fps["ours"]["median"] / fps["vos-benchmark"]["median"],
            "identical": identical, "max_abs_diff": max_diff, "target": TARGET,
            "pass": bool(identical and ratio >= TARGET), "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def print_table(r: dict) -> None:
    print(f"data: {r['data']} {r['split']}: {r['sequences']} sequences, {r['evaluated_frames']} "
          f"evaluated frames; workers={r['workers']}, repeats={r['repeats']}, load "
          f"{r['load_average']}")
    for name, v in r["frames_per_s"].items():
        print(f"  {name:14s} {v['best']:8.1f} frames/s best  {v['median']:8.1f} median")
    print(f"per-sequence J and F identical: {r['identical']} (max |diff| {r['max_abs_diff']:.3g})")
    verdict = "PASS" if r["pass"] else "FAIL"
    print(f"ours / vos-benchmark {r['ratio']:.2f}x (median {r['ratio_median']:.2f}x), target "
          f">= {r['target']}x: {verdict}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--davis-root", required=True, help="DAVIS-2016 root (Annotations/480p, ImageSets/480p)")
    p.add_argument("--split", default="val")
    p.add_argument("--workers", type=int, default=2, help="processes for both tools")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat (smoke test)")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--tmp-dir", help="temporary folder (default: system temp)")
    args = p.parse_args(argv)
    r = run(args)
    print(json.dumps(r, sort_keys=True) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        print_table(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
