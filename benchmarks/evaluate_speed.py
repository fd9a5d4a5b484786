#!/usr/bin/env python
"""Speed of the DAVIS evaluation (J and F) against a per-frame implementation in the style of the
official tools, on the same generated data, in one run.

    python benchmarks/evaluate_speed.py              # 20 sequences x 70 frames, 854x480, 1-3 objects
    python benchmarks/evaluate_speed.py --quick      # 3 sequences x 12 frames, one repeat
    python benchmarks/evaluate_speed.py --cli        # also time `python launch/evaluate.py`

Contenders (frames/s = evaluated frames -- first and last of each sequence left out -- per second):

* ``pipeline w=K``: :func:`pipeline.evaluation.davis.evaluate_davis` (the code path of
  ``launch/evaluate.py``) with K worker processes, writing its CSVs.
* ``official-style (skimage disk)``: the 1.0 baseline. Per sequence, as the official tools are
  written: every ground-truth and result PNG read with PIL, objects one-hot encoded, then per
  object and per frame ``db_eval_iou`` and ``db_eval_boundary`` (a per-frame ``seg2bmap`` of both
  masks and a binary dilation of each boundary map by the disk, ``scipy.ndimage`` as
  ``skimage.morphology.binary_dilation`` does in the DAVIS-2016 tool), then the statistics.
* ``official-style (cv2.dilate)``: the same with ``cv2.dilate`` for the dilation, as
  davis2017-evaluation does (for information).

All contenders must produce the same per-object J and F (checked). Data: DAVIS-2017 layout in a
temporary folder (palette PNGs, 1-3 moving and deforming ellipses per sequence; results = the
ground truth shifted, eroded or dilated, sometimes with an object dropped; JPEGImages holds a tiny
placeholder JPEG per frame since the evaluation never reads images). Removed at the end.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET = 10.0  # pipeline (default workers) / official-style baseline


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def _palette() -> list[int]:
    pal = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128]
    return pal + [0] * (768 - len(pal))


def _tiny_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 60)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def make_dataset(root: Path, n_sequences: int, n_frames: int, size=(854, 480), seed: int = 0):
    """DAVIS-2017 layout with ground truth and a results folder; returns (davis_root, results,
    evaluated frame count)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    davis, results = root / "DAVIS", root / "results"
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    jpeg = _tiny_jpeg()
    yy, xx = np.mgrid[0:h, 0:w]
    names = [f"seq{i:03d}" for i in range(n_sequences)]
    evaluated = 0
    for name in names:
        k = int(rng.integers(1, 4))
        n = n_frames + int(rng.integers(-2, 3)) if n_frames > 6 else n_frames
        objs = []
        for _ in range(k):
            objs.append(dict(c=rng.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.8 * h]),
                             v=rng.uniform(-4, 4, 2), a=rng.uniform(30, 120), b=rng.uniform(25, 90),
                             th=rng.uniform(0, np.pi), dth=rng.uniform(-0.03, 0.03),
                             shift=rng.integers(-6, 7, 2), grow=int(rng.integers(-3, 4)),
                             drop=rng.random() < 0.15))
        for sub in ("JPEGImages", "Annotations"):
            (davis / sub / "480p" / name).mkdir(parents=True)
        (results / name).mkdir(parents=True)
        for t in range(n):
            gt = np.zeros((h, w), np.uint8)
            res = np.zeros((h, w), np.uint8)
            for i, o in enumerate(objs, 1):
                cx, cy = o["c"] + o["v"] * t
                th = o["th"] + o["dth"] * t
                a = o["a"] * (1 + 0.1 * np.sin(t / 5 + i))
                for target, dx, dy, da in ((gt, 0, 0, 0),
                                           (res, *o["shift"], o["grow"])):
                    x, y = xx - cx - dx, yy - cy - dy
                    u = x * np.cos(th) + y * np.sin(th)
                    v = -x * np.sin(th) + y * np.cos(th)
                    inside = (u / (a + da)) ** 2 + (v / (o["b"] + da)) ** 2 <= 1
                    if target is res and o["drop"] and t > n // 2:
                        continue
                    target[inside] = i
            (davis / "JPEGImages" / "480p" / name / f"{t:05d}.jpg").write_bytes(jpeg)
            for arr, path in ((gt, davis / "Annotations" / "480p" / name / f"{t:05d}.png"),
                              (res, results / name / f"{t:05d}.png")):
                im = Image.fromarray(arr, "P")
                im.putpalette(_palette())
                im.save(path, compress_level=1)
        evaluated += max(0, n - 2)
    (davis / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return davis, results, evaluated


# --------------------------------------------------------------------------------------------
# the baseline: the official tools' structure, written plainly
# --------------------------------------------------------------------------------------------
def _seg2bmap(seg):
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _disk(r):
    r = int(r)
    L = np.arange(-r, r + 1)
    X, Y = np.meshgrid(L, L)
    return (X ** 2 + Y ** 2 <= r ** 2).astype(np.uint8)


def _iou(gt, seg):
    gt, seg = gt.astype(bool), seg.astype(bool)
    inter = np.sum(gt & seg)
    union = np.sum(gt | seg)
    return 1.0 if union == 0 else inter / union


def _f_measure(fg, gt, dilation: str, bound_th=0.008):
    bound_pix = np.ceil(bound_th * np.linalg.norm(fg.shape))
    fg_b, gt_b = _seg2bmap(fg), _seg2bmap(gt)
    kernel = _disk(bound_pix)
    if dilation == "cv2":
        import cv2

        fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel) > 0
        gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel) > 0
    else:
        from scipy import ndimage

        fg_dil = ndimage.binary_dilation(fg_b, structure=kernel.astype(bool))
        gt_dil = ndimage.binary_dilation(gt_b, structure=kernel.astype(bool))
    gt_match = gt_b & fg_dil
    fg_match = fg_b & gt_dil
    n_fg, n_gt = np.sum(fg_b), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _stats(v):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        M = np.nanmean(v)
        R = np.nanmean(v > 0.5)
        ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64) % 256
        bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
        D = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return M, R, D


def baseline_evaluate(davis_root: Path, results: Path, split: str = "val",
                      dilation: str = "ndimage", year: int = 2017) -> dict[str, tuple[float, float]]:
    """Per-object (J-Mean, F-Mean), computed frame by frame as the official tools do."""
    from PIL import Image

    if year == 2016:
        lines = (davis_root / "ImageSets" / "480p" / f"{split}.txt").read_text().split()
        names = sorted({Path(p).parent.name for p in lines if p.startswith("/JPEGImages")})
    else:
        names = [s.strip() for s in
                 (davis_root / "ImageSets" / "2017" / f"{split}.txt").read_text().splitlines() if s.strip()]
    out = {}
    for seq in names:
        files = sorted(glob.glob(str(davis_root / "Annotations" / "480p" / seq / "*.png")))
        masks = np.stack([np.array(Image.open(f)) for f in files])
        if year == 2016:
            masks = (masks > 0).astype(np.uint8)
        masks[masks == 255] = 0
        n_obj = int(masks[0].max())
        gt = masks[1:-1]
        ids = [Path(f).stem for f in files][1:-1]
        res = np.stack([np.array(Image.open(results / seq / f"{i}.png")) for i in ids])
        if year == 2016:
            res = (res > 0).astype(np.uint8)
        for k in range(1, n_obj + 1):
            J = np.array([_iou(gt[t] == k, res[t] == k) for t in range(len(ids))])
            F = np.array([_f_measure(res[t] == k, gt[t] == k, dilation) for t in range(len(ids))])
            out[f"{seq}_{k}"] = (_stats(J)[0], _stats(F)[0])
    return out


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
def run_pipeline(davis, results, out, workers):
    from pipeline.evaluation.davis import evaluate_davis, write_outputs

    rep = evaluate_davis(davis, results, 2017, "val", workers=workers)
    write_outputs(rep, out, plot=False)
    return {row: (j[0], f[0]) for row, j, f in rep.object_rows()}


def run_cli(davis, results, out, workers):
    cmd = [sys.executable, str(REPO / "launch" / "evaluate.py"), "--davis-root", str(davis),
           "--results", str(results), "--year", "2017", "--split", "val", "--out", str(out),
           "--workers", str(workers), "--no-plot"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=20)
    p.add_argument("--frames", type=int, default=70)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--baseline-repeats", type=int, default=1,
                   help="repeats of the (slow) skimage-style baseline (default 1)")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="pipeline worker counts to time (default: 1 and the CPUs available)")
    p.add_argument("--quick", action="store_true", help="3 sequences x 12 frames, one repeat")
    p.add_argument("--cli", action="store_true", help="also time launch/evaluate.py in a subprocess")
    p.add_argument("--no-cv2-baseline", action="store_true", help="skip the cv2.dilate baseline")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where to write the data")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a = p.parse_args(argv)
    if a.quick:
        a.sequences, a.frames, a.repeats, a.baseline_repeats = 3, 12, 1, 1
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        ncpu = os.cpu_count() or 1
    workers = a.workers or sorted({1, ncpu})
    default_w = ncpu  # what launch/evaluate.py uses by default
    if default_w not in workers:
        workers = sorted(set(workers) | {default_w})

    tmp = Path(tempfile.mkdtemp(prefix="evalbench_", dir=a.tmp_dir))
    try:
        t0 = time.perf_counter()
        davis, results, n_eval = make_dataset(tmp, a.sequences, a.frames)
        gen_s = time.perf_counter() - t0
        for f in glob.glob(str(tmp / "**" / "*.png"), recursive=True):  # warm the page cache
            Path(f).read_bytes()

        contenders = {f"pipeline w={w}": (lambda w=w: run_pipeline(davis, results, tmp / f"out{w}", w))
                      for w in workers}
        contenders["official-style (skimage disk)"] = lambda: baseline_evaluate(davis, results,
                                                                                dilation="ndimage")
        if not a.no_cv2_baseline:
            contenders["official-style (cv2.dilate)"] = lambda: baseline_evaluate(davis, results,
                                                                                  dilation="cv2")
        if a.cli:
            contenders[f"cli w={default_w}"] = lambda: run_cli(davis, results, tmp / "outcli",
                                                               default_w)
        times: dict[str, list[float]] = {k: [] for k in contenders}
        outputs = {}
        slow = "official-style (skimage disk)"
        for rep in range(a.repeats):  # round-robin
            for name, fn in contenders.items():
                if name == slow and rep >= a.baseline_repeats:
                    continue
                t = time.perf_counter()
                r = fn()
                times[name].append(time.perf_counter() - t)
                if r is not None:
                    outputs[name] = r
        # same numbers everywhere
        ref = outputs["official-style (skimage disk)"]
        for name, r in outputs.items():
            if set(r) != set(ref) or any(abs(r[k][0] - ref[k][0]) > 1e-12 or
                                         abs(r[k][1] - ref[k][1]) > 1e-12 for k in ref):
                raise SystemExit(f"{name}: per-object J/F differ from the baseline")

        fps = {k: {"best": n_eval / min(v), "median": n_eval / statistics.median(v),
                   "seconds_best": min(v)} for k, v in times.items()}
        base = fps["official-style (skimage disk)"]["best"]
        ratios = {k: v["best"] / base for k, v in fps.items()}
        main_name = f"pipeline w={default_w}"
        result = {
            "data": {"sequences": a.sequences, "objects": len(ref), "evaluated_frames": n_eval,
                     "size": "854x480", "generation_s": round(gen_s, 2)},
            "frames_per_s": fps, "ratios_to_baseline": ratios,
            "target": {"name": f"{main_name} / official-style (skimage disk)", "ratio": TARGET,
                       "value": ratios[main_name], "pass": ratios[main_name] >= TARGET},
            "cpus": ncpu, "repeats": a.repeats, "baseline_repeats": a.baseline_repeats,
            "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
        if a.json:
            print(json.dumps(result, indent=1))
        else:
            print(f"DAVIS-2017 layout, {a.sequences} sequences, {len(ref)} objects, {n_eval} "
                  f"evaluated frames at 854x480; {ncpu} CPU(s); best of {a.repeats} (median), "
                  f"skimage-style baseline {a.baseline_repeats} run(s)")
            for k, v in fps.items():
                print(f"  {k:32s} {v['best']:8.1f} frames/s ({v['median']:.1f})  "
                      f"{ratios[k]:6.2f}x baseline")
            ok = "PASS" if result["target"]["pass"] else "FAIL"
            print(f"{main_name} / official-style (skimage disk) {ratios[main_name]:.2f}x "
                  f"(target >= {TARGET:g}x) {ok}")
            if "official-style (cv2.dilate)" in ratios:
                print(f"{main_name} / official-style (cv2.dilate) "
                      f"{ratios[main_name] / ratios['official-style (cv2.dilate)']:.2f}x (info)")
            print(f"load average {result['load_avg']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
