"""Mean IoU on YouTube-Objects (the Jain & Grauman masks), as reported by STCNN.

Ground truth: the labelled frames of every shot (docs/layouts.md), grayscale JPEG labels,
foreground = value > 15. Results: ``<results>/<class>/<video>/<shot>/<NNNNN>.png``, named like
the label (foreground = value > 0; 0/255 grayscale or indexed). IoU per labelled frame (both
masks empty -> 1, as J), averaged over the labelled frames of each category; the overall mean
averages the category means.

Outputs (:func:`write_outputs`): ``youtube_objects-per-category.csv``
(``Category,mIoU,Frames,Shots``, the last row ``Mean``), ``youtube_objects-per-shot.csv``
(``Shot,mIoU,Frames``) and a bar plot ``youtube_objects-per-category.png``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.core.mask_png import MaskFormatError, jpeg_label_foreground

from pipeline.evaluation import metrics
from pipeline.evaluation.davis import EvaluationError, _open_png, _pool, check_results, csv_text
from pipeline.evaluation.report import plot_categories
from pipeline.core.atomic import atomic_write_bytes
from pipeline.sources.base import SourceError
from pipeline.sources import get_source

THRESHOLD = 15  # the release's foreground threshold on its JPEG labels


@dataclasses.dataclass
class ShotResult:
    name: str  # <class>/<video>/<shot>
    frames: list[str]
    iou: np.ndarray

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]


@dataclasses.dataclass
class YtoReport:
    shots: list[ShotResult]

    def per_category(self) -> list[tuple[str, float, int, int]]:
        """(category, mean IoU over its labelled frames, frames, shots), sorted by name."""
        cats: dict[str, list[ShotResult]] = {}
        for s in self.shots:
            cats.setdefault(s.category, []).append(s)
        out = []
        for c in sorted(cats):
            v = np.concatenate([s.iou for s in cats[c]]) if cats[c] else np.zeros(0)
            out.append((c, float(np.mean(v)) if v.size else math.nan, int(v.size), len(cats[c])))
        return out

    def mean(self) -> float:
        vals = [r[1] for r in self.per_category() if not math.isnan(r[1])]
        return float(np.mean(vals)) if vals else math.nan


def read_label(path: Path) -> np.ndarray:
    """A label JPEG of the release -> bool foreground (value > THRESHOLD), read by the one mask
    reader (:func:`pipeline.core.mask_png.jpeg_label_foreground`)."""
    try:
        return jpeg_label_foreground(path, THRESHOLD)
    except OSError as e:
        raise EvaluationError(path, f"cannot read label ({e.strerror or e})",
                              "restore it from the youtube_masks release") from e
    except MaskFormatError as e:
        raise EvaluationError(path, f"cannot read label: {e.problem}", e.fix) from e


def _score_shot(job: tuple[str, tuple[Path, ...], Path]) -> ShotResult:
    name, labels, results = job
    ious, frames = [], []
    for lab in labels:
        gt = read_label(lab)
        res_path = results / name / f"{lab.stem}.png"
        arr = _open_png(res_path, "result frame")
        if arr.shape[:2] != gt.shape:
            raise EvaluationError(res_path, f"result is {arr.shape[1]}x{arr.shape[0]} (WxH) but the "
                                            f"label is {gt.shape[1]}x{gt.shape[0]}",
                                  "save results at the resolution of the frames")
        pred = np.any(arr[..., :3] > 0, axis=-1) if arr.ndim == 3 else arr > 0
        ious.append(metrics.jaccard(gt, pred))
        frames.append(lab.stem)
    return ShotResult(name, frames, np.asarray(ious, dtype=np.float64))


def evaluate_youtube_objects(root: str | Path, results: str | Path, *, workers: int = 1,
                             categories: Iterable[str] | None = None,
                             shots: Iterable[str] | None = None) -> YtoReport:
    """Score ``results`` on every labelled frame of the YouTube-Objects release at ``root``
    (of the given ``categories`` and ``shots`` ``<class>/<video>/<shot>`` only, when given)."""
    results = Path(results)
    if not results.is_dir():
        raise EvaluationError(results, "results folder does not exist",
                              "pass the folder holding <class>/<video>/<shot>/<NNNNN>.png")
    try:
        seqs = get_source("youtube_objects", root).sequences("test")
    except SourceError as e:
        raise EvaluationError(e.path, e.problem, e.fix) from e
    want = set(categories) if categories is not None else None
    only = set(shots) if shots is not None else None
    jobs = []
    for s in seqs:
        if want is not None and s.name.split("/", 1)[0] not in want:
            continue
        if only is not None and s.name not in only:
            continue
        labels = tuple(f.mask for f in s.annotated)
        if labels:
            jobs.append((s.name, labels, results))
    if not jobs:
        raise EvaluationError(root, "no labelled shot to evaluate", "check the root and categories")
    check_results(results, [name for name, _, _ in jobs],
                  "write <results>/<class>/<video>/<shot>/<NNNNN>.png for every labelled shot")
    if workers <= 1 or len(jobs) <= 1:
        shots = [_score_shot(j) for j in jobs]
    else:
        with _pool(min(workers, len(jobs))) as ex:
            shots = list(ex.map(_score_shot, jobs, chunksize=4))
    return YtoReport(shots)


def write_outputs(report: YtoReport, out: str | Path, plot: bool = True) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cats = report.per_category()
    rows = [(c, m, str(n), str(k)) for c, m, n, k in cats]
    rows.append(("Mean", report.mean(), str(sum(r[2] for r in cats)),
                 str(sum(r[3] for r in cats))))
    paths = {"per_category": out / "youtube_objects-per-category.csv",
             "per_shot": out / "youtube_objects-per-shot.csv"}
    atomic_write_bytes(paths["per_category"],
                       csv_text(["Category", "mIoU", "Frames", "Shots"], rows).encode())
    shot_rows = [(s.name, float(np.mean(s.iou)) if s.iou.size else math.nan, str(s.iou.size))
                 for s in report.shots]
    atomic_write_bytes(paths["per_shot"], csv_text(["Shot", "mIoU", "Frames"], shot_rows).encode())
    if plot:
        paths["plot"] = plot_categories([(c, m, n) for c, m, n, _ in cats],
                                        out / "youtube_objects-per-category.png",
                                        f"YouTube-Objects: mean IoU {report.mean():.3f}")
    return paths


def format_table(report: YtoReport) -> str:
    lines = [f"{'Category':>12} {'mIoU':>8} {'Frames':>7} {'Shots':>6}"]
    for c, m, n, k in report.per_category():
        lines.append(f"{c:>12} {m:8.3f} {n:7d} {k:6d}")
    lines.append(f"{'Mean':>12} {report.mean():8.3f}")
    return "\n".join(lines)


__all__ = ["evaluate_youtube_objects", "write_outputs", "format_table", "YtoReport", "ShotResult",
           "THRESHOLD"]
