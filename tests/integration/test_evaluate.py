"""The DAVIS protocol and ``launch/evaluate.py`` end to end, YouTube-Objects, and the benchmark's
smoke test.

* Real DAVIS-2016 sample (fixture ``real_davis``): the copy-first-frame predictor (every frame =
  the first frame's mask) scored through the CLI; the CSVs must have the official columns and
  formatting and hold exactly the numbers of the metric functions computed here frame by frame
  (and of the plain official-style implementation of the benchmark).
* Synthetic DAVIS 2017 (palette masks, several objects): ground truth as prediction scores 1
  everywhere; an object missing from the results scores 0 on its row; void (255) in the ground
  truth is background.
* Bad results folders fail with an error naming the file.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation import metrics as M
from pipeline.evaluation.davis import (GLOBAL_COLUMNS, SEQUENCE_COLUMNS, EvaluationError,
                                       evaluate_davis, write_outputs)

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "launch" / "evaluate.py"
NUM = re.compile(r"^-?\d+\.\d{3}$")


def run_cli(*args, ok=True):
    proc = subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(path.read_text().splitlines()))
    return rows[0], rows[1:]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("evaluate_speed", REPO / "benchmarks" / "evaluate_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------------------------
# real DAVIS-2016 sample
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def copy_first(real_davis, tmp_path_factory):
    """Results of the copy-first-frame predictor for every sequence of the sample."""
    res = tmp_path_factory.mktemp("copy_first")
    for seq_dir in sorted((real_davis / "Annotations" / "480p").iterdir()):
        frames = sorted(seq_dir.glob("*.png"))
        first = Image.open(frames[0])
        (res / seq_dir.name).mkdir()
        for f in frames:
            first.save(res / seq_dir.name / f.name)
    return res


def direct_scores(root: Path, results: Path, seq: str):
    """Per-frame J and F of the evaluated frames, computed here frame by frame."""
    frames = sorted((root / "Annotations" / "480p" / seq).glob("*.png"))[1:-1]
    J, F = [], []
    for f in frames:
        gt = np.array(Image.open(f)) > 0
        pred = np.array(Image.open(results / seq / f.name)) > 0
        J.append(M.jaccard(gt, pred))
        F.append(M.boundary_f(gt, pred))
    return np.array(J), np.array(F)


@pytest.mark.slow  # > 5 s on 2 cores: keeps -m "not slow" under 3 min
def test_cli_on_real_davis_copy_first_frame(real_davis, copy_first, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli("--davis-root", real_davis, "--results", copy_first, "--year", 2016,
                   "--split", "trainval", "--out", out, "--workers", 2)
    assert "Global results for trainval" in proc.stdout and "J&F-Mean" in proc.stdout
    head, rows = read_csv(out / "global_results-trainval.csv")
    assert head == GLOBAL_COLUMNS and len(rows) == 1
    assert all(NUM.match(v) for v in rows[0])
    head, seq_rows = read_csv(out / "per-sequence_results-trainval.csv")
    assert head == SEQUENCE_COLUMNS
    assert [r[0] for r in seq_rows] == ["blackswan_1", "surf_1"]
    assert all(NUM.match(v) for r in seq_rows for v in r[1:])
    assert (out / "per-sequence_results-trainval.png").stat().st_size > 1000

    stats = {}
    for seq in ("blackswan", "surf"):
        J, F = direct_scores(real_davis, copy_first, seq)
        stats[seq] = (M.db_statistics(J), M.db_statistics(F))
        # sanity: the first evaluated frame is close to the given mask, then it decays
        assert J[0] > 0.75 and J[-1] < J[0] - 0.2
        assert stats[seq][0][2] > 0.05 and stats[seq][1][2] > 0.05  # J-Decay, F-Decay
    for r, seq in zip(seq_rows, ("blackswan", "surf")):
        assert r[1] == "%.3f" % stats[seq][0][0] and r[2] == "%.3f" % stats[seq][1][0]
    jm = np.mean([stats[s][0][0] for s in stats])
    fm = np.mean([stats[s][1][0] for s in stats])
    want = [(jm + fm) / 2, jm, np.mean([stats[s][0][1] for s in stats]),
            np.mean([stats[s][0][2] for s in stats]), fm,
            np.mean([stats[s][1][1] for s in stats]), np.mean([stats[s][1][2] for s in stats])]
    assert rows[0] == ["%.3f" % v for v in want]

    # T (DAVIS 2016): the copied mask never changes, so T = 0 on both sequences
    head, t_rows = read_csv(out / "per-sequence_T-trainval.csv")
    assert head == ["Sequence", "T-Mean", "eval_t"]
    assert t_rows == [["blackswan", "0.000", "True"], ["surf", "0.000", "True"]]


def test_real_davis_numbers_match_the_official_style_implementation(real_davis, copy_first):
    rep = evaluate_davis(real_davis, copy_first, 2016, "trainval", temporal=False)
    bench = load_benchmark()
    ref = bench.baseline_evaluate(real_davis, copy_first, "trainval", dilation="cv2", year=2016)
    got = {row: (j[0], f[0]) for row, j, f in rep.object_rows()}
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-12)


def test_t_of_a_real_sequence_from_the_protocol(real_davis, tmp_path):
    """T of the ground truth itself as the result (blackswan, first 8 frames): 5 x the raw T
    between consecutive evaluated frames."""
    seq = "blackswan"
    frames = sorted((real_davis / "Annotations" / "480p" / seq).glob("*.png"))[:8]
    root = tmp_path / "DAVIS"
    for sub, ext in (("Annotations", "png"), ("JPEGImages", "jpg")):
        d = root / sub / "480p" / seq
        d.mkdir(parents=True)
        for f in frames:
            shutil.copy(real_davis / sub / "480p" / seq / f"{f.stem}.{ext}", d)
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "val.txt").write_text("".join(
        f"/JPEGImages/480p/{seq}/{f.stem}.jpg /Annotations/480p/{seq}/{f.name} \n" for f in frames))
    res = tmp_path / "res"
    shutil.copytree(root / "Annotations" / "480p", res)
    rep = evaluate_davis(root, res, 2016, "val")
    s = rep.sequences[0]
    masks = [np.array(Image.open(f)) > 0 for f in frames[1:-1]]
    want = [5 * M.temporal_instability(a, b) for a, b in zip(masks[:-1], masks[1:])]
    assert len(s.T) == len(frames) - 3 and np.allclose(s.T, want, rtol=0, atol=0)
    assert 0 < s.t_mean < 0.5
    assert np.all(s.J == 1.0) and np.all(s.F == 1.0)


# --------------------------------------------------------------------------------------------
# synthetic DAVIS 2017
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def davis2017(tmp_path_factory):
    from pipeline.synthetic import SyntheticSpec, write_dataset

    root = tmp_path_factory.mktemp("syn17") / "DAVIS"
    write_dataset("davis2017", root, SyntheticSpec(size=(96, 64), n_sequences=3, n_frames=8,
                                                   n_objects=(2, 3), seed=1))
    return root


def val_sequences(root: Path) -> list[str]:
    return (root / "ImageSets" / "2017" / "val.txt").read_text().split()


def copy_gt(root: Path, dest: Path) -> Path:
    """The ground truth written as a result: the same ids, void (255, which results never
    hold) as background, as the evaluation reads the ground truth."""
    for seq in val_sequences(root):
        for f in sorted((root / "Annotations" / "480p" / seq).glob("*.png")):
            im = Image.open(f)
            arr = np.array(im)
            arr[arr == 255] = 0
            out = Image.fromarray(arr, im.mode)
            if im.mode == "P":
                out.putpalette(im.getpalette())
            (dest / seq).mkdir(parents=True, exist_ok=True)
            out.save(dest / seq / f.name)
    return dest


def max_id(path: Path) -> int:
    """The largest object id of a mask (255, void, is not an object)."""
    arr = np.array(Image.open(path))
    return int(arr[arr != 255].max(initial=0))


def test_2017_ground_truth_as_prediction_scores_one(davis2017, tmp_path):
    res = copy_gt(davis2017, tmp_path / "res")
    out = tmp_path / "eval"
    proc = run_cli("--davis-root", davis2017, "--results", res, "--year", 2017, "--out", out,
                   "--workers", 1)
    assert "Per sequence results for val" in proc.stdout
    head, rows = read_csv(out / "global_results-val.csv")
    assert rows == [["1.000", "1.000", "1.000", "0.000", "1.000", "1.000", "0.000"]]
    head, seq_rows = read_csv(out / "per-sequence_results-val.csv")
    n_objects = {seq: max_id(sorted((davis2017 / "Annotations" / "480p" / seq).glob("*.png"))[0])
                 for seq in val_sequences(davis2017)}
    assert [r[0] for r in seq_rows] == [f"{s}_{k}" for s in val_sequences(davis2017)
                                        for k in range(1, n_objects[s] + 1)]
    assert max(n_objects.values()) >= 2
    assert all(r[1:] == ["1.000", "1.000"] for r in seq_rows)
    assert not (out / "per-sequence_T-val.csv").exists()  # T is a 2016 measure


def test_2017_missing_object_scores_zero_and_void_is_background(davis2017, tmp_path):
    seqs = val_sequences(davis2017)
    firsts = {s: np.array(Image.open(sorted((davis2017 / "Annotations" / "480p" / s).glob("*.png"))[0]))
              for s in seqs}
    seq = next(s for s in seqs if firsts[s][firsts[s] != 255].max() >= 2)
    k = int(firsts[seq][firsts[seq] != 255].max())  # this object disappears from the results
    res = copy_gt(davis2017, tmp_path / "res")
    for f in sorted((res / seq).glob("*.png")):
        im = Image.open(f)
        arr = np.array(im)
        arr[arr == k] = 0
        out = Image.fromarray(arr, "P")
        out.putpalette(im.getpalette())
        out.save(f)
    # void in the ground truth: a band of 255 over background pixels of every frame
    gt_root = tmp_path / "DAVIS"
    shutil.copytree(davis2017, gt_root)
    for f in sorted((gt_root / "Annotations" / "480p" / seq).glob("*.png")):
        im = Image.open(f)
        arr = np.array(im)
        band = np.zeros_like(arr, bool)
        band[:, :6] = True
        arr[band & (arr == 0)] = 255
        out = Image.fromarray(arr, "P")
        out.putpalette(im.getpalette())
        out.save(f)
    rep = evaluate_davis(gt_root, res, 2017, "val")
    rows = {row: (j, f) for row, j, f in rep.object_rows()}
    for row, (j, f) in rows.items():
        if row == f"{seq}_{k}":
            frames_present = [np.any(np.array(Image.open(p)) == k) for p in
                              sorted((davis2017 / "Annotations" / "480p" / seq).glob("*.png"))[1:-1]]
            assert all(frames_present)
            assert j[0] == 0.0 and f[0] == 0.0 and j[1] == 0.0  # mean, recall
        else:
            assert j[0] == 1.0 and f[0] == 1.0, row
    g = rep.global_row()
    n = len(rows)
    assert g[1] == pytest.approx((n - 1) / n) and g[0] == pytest.approx((n - 1) / n)
    paths = write_outputs(rep, tmp_path / "eval")
    head, seq_rows = read_csv(paths["per_sequence"])
    assert [f"{seq}_{k}", "0.000", "0.000"] in seq_rows


def test_errors_name_the_file(davis2017, tmp_path):
    seq = val_sequences(davis2017)[0]
    res = copy_gt(davis2017, tmp_path / "res")
    frames = sorted((res / seq).glob("*.png"))
    # the first and last frames are not needed
    frames[0].unlink()
    frames[-1].unlink()
    evaluate_davis(davis2017, res, 2017, "val")
    # a missing evaluated frame
    frames[2].unlink()
    proc = run_cli("--davis-root", davis2017, "--results", res, "--year", 2017, "--out",
                   tmp_path / "e", ok=False)
    assert proc.returncode == 2 and str(frames[2]) in proc.stderr and "does not exist" in proc.stderr
    # wrong size
    Image.new("P", (50, 40)).save(frames[2])
    with pytest.raises(EvaluationError, match=re.escape(str(frames[2])) + ".*50x40"):
        evaluate_davis(davis2017, res, 2017, "val")
    # an id above the sequence's objects
    arr = np.array(Image.open(frames[1]))
    Image.fromarray(np.full(arr.shape, 200, np.uint8), "L").save(frames[2])
    with pytest.raises(EvaluationError, match="object id 200"):
        evaluate_davis(davis2017, res, 2017, "val")
    # a missing sequence folder
    shutil.rmtree(res / seq)
    with pytest.raises(EvaluationError, match="no results for sequence"):
        evaluate_davis(davis2017, res, 2017, "val")
    # DAVIS-2016 0/255 masks read with the 2017 rule lose their object (255 = void)
    bin_root = tmp_path / "bin"
    shutil.copytree(davis2017, bin_root)
    first = sorted((bin_root / "Annotations" / "480p" / seq).glob("*.png"))[0]
    Image.fromarray(np.where(np.array(Image.open(first)) > 0, 255, 0).astype(np.uint8), "L").save(first)
    with pytest.raises(EvaluationError, match="holds no object.*year 2016"):
        evaluate_davis(bin_root, copy_gt(davis2017, tmp_path / "res2"), 2017, "val",
                       sequences=[seq])


def test_2016_masks_are_binary_never_void(davis2017, tmp_path):
    """Year 2016 reads any value > 0 as foreground: 255 is the object, not void."""
    seq = val_sequences(davis2017)[0]
    res = tmp_path / "res"
    (res / seq).mkdir(parents=True)
    gt_dir = davis2017 / "Annotations" / "480p" / seq
    for f in sorted(gt_dir.glob("*.png")):
        arr = np.array(Image.open(f))
        Image.fromarray(np.where(arr > 0, 255, 0).astype(np.uint8), "L").save(res / seq / f.name)
    root = tmp_path / "DAVIS"
    shutil.copytree(davis2017, root)
    (root / "ImageSets" / "2016" / "val.txt").write_text(seq + "\n")
    rep = evaluate_davis(root, res, 2016, "val", temporal=False)
    assert rep.object_rows()[0][0] == f"{seq}_1"
    assert rep.global_row()[0] == 1.0


# --------------------------------------------------------------------------------------------
# YouTube-Objects
# --------------------------------------------------------------------------------------------
def test_youtube_objects_mean_iou(tmp_path):
    from pipeline.synthetic import SyntheticSpec, write_dataset
    from pipeline.evaluation import youtube_objects as yto

    root = write_dataset("youtube_objects", tmp_path / "yto",
                         SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=8, label_every=3))
    res = tmp_path / "res"
    labels = sorted((root / "youtube_masks").glob("*/data/*/shots/*/labels/*.jpg"))
    assert labels
    for lab in labels:
        cls, _, video, _, shot = lab.relative_to(root / "youtube_masks").parts[:5]
        gt = np.array(Image.open(lab).convert("L")) > yto.THRESHOLD
        d = res / cls / video / shot
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((gt * 255).astype(np.uint8), "L").save(d / f"{lab.stem}.png")
    out = tmp_path / "eval"
    proc = run_cli("--youtube-objects-root", root, "--results", res, "--out", out, "--workers", 1)
    assert "Mean" in proc.stdout
    head, rows = read_csv(out / "youtube_objects-per-category.csv")
    assert head == ["Category", "mIoU", "Frames", "Shots"]
    assert all(r[1] == "1.000" for r in rows) and rows[-1][0] == "Mean"
    assert sum(int(r[2]) for r in rows[:-1]) == len(labels)
    # an empty prediction on one labelled frame lowers its category only
    lab = labels[0]
    cls, _, video, _, shot = lab.relative_to(root / "youtube_masks").parts[:5]
    gt = np.array(Image.open(lab).convert("L")) > yto.THRESHOLD
    Image.fromarray(np.zeros(gt.shape, np.uint8), "L").save(res / cls / video / shot / f"{lab.stem}.png")
    rep = yto.evaluate_youtube_objects(root, res)
    cats = {c: (m, n) for c, m, n, _ in rep.per_category()}
    m, n = cats[cls]
    assert m == pytest.approx((n - 1 + (1.0 if not gt.any() else 0.0)) / n)
    assert all(v[0] == 1.0 for c, v in cats.items() if c != cls)


# --------------------------------------------------------------------------------------------
# benchmark smoke test (no speed asserted)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
def test_benchmark_quick_runs_and_prints_a_ratio(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "evaluate_speed.py"),
                           "--quick", "--tmp-dir", str(tmp_path), "--workers", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "official-style (skimage disk)" in ln
                and "target" in ln)
    ratio = float(re.search(r"(\d+\.\d+)x \(target", line).group(1))
    assert math.isfinite(ratio) and ratio > 0 and ("PASS" in line) != ("FAIL" in line)
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"
