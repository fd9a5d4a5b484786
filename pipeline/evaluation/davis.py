"""The DAVIS semi-supervised protocol, with the output files of the official tool.

``evaluate_davis(davis_root, results, year, split)`` scores a results folder laid out as the
official tools expect, ``<results>/<sequence>/<frame>.png`` (one PNG per ground-truth frame;
the first and last frame may be absent):

* **Frames**: the first frame (the given mask) and the last frame of each sequence are not
  evaluated; the statistics of each object (mean, recall, decay: davis2017-evaluation's
  ``db_statistics``, for both years) are taken over the remaining frames.
* **DAVIS 2017** (``year=2017``): palette/grayscale PNGs of object ids. The objects of a
  sequence are ``1..K``, K = the largest id in the first ground-truth frame; 255 in the ground
  truth is void and is set to background (as the official reader does; the semi-supervised
  protocol does not otherwise use it). One row per object, ``<sequence>_<id>``, the sequences in
  the order of ``ImageSets/2017/<split>.txt`` (as the official tool lists them); an object absent
  from the results scores 0 in every frame; an id above K in a result frame is an error (the
  official tool stops there too). Global numbers average over objects.
* **DAVIS 2016** (``year=2016``): binary masks, foreground = value > 0 in both the ground truth
  (0/255 grayscale) and the results (0/255 grayscale or indexed) -- never the 2017 void rule.
  One row per sequence, ``<sequence>_1``; global numbers average over sequences. The DAVIS-2016
  temporal stability T is computed too (unless ``temporal=False``): 5 x the raw T between the
  consecutive evaluated result frames, T-Mean = their mean (NaN pairs ignored); the global T-Mean
  averages the sequences with ``eval_t: True`` in ``Annotations/db_info.yml`` (all sequences when
  that file is absent).

Outputs (:func:`write_outputs`), in ``out``:

* ``global_results-<split>.csv``: ``J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay``
* ``per-sequence_results-<split>.csv``: ``Sequence,J-Mean,F-Mean``
  (both exactly as davis2017-evaluation writes them: pandas ``to_csv(index=False,
  float_format="%.3f")``; a NaN is an empty field)
* 2016 with T: ``per-sequence_T-<split>.csv`` (``Sequence,T-Mean,eval_t``) and
  ``global_T-<split>.csv`` (``T-Mean,Sequences``)
* ``per-sequence_results-<split>.png``: bar plot of J and F per row (:mod:`.report`).

Decay past 256 frames: by default the bin edges are cast to uint8 as in the official code
(wrong: it wraps around, usually giving a NaN decay); ``decay_index="int"`` uses the true
indices.

One job, long because the protocol's reading rules, its per-sequence scoring and the official
tool's exact output files belong together: each depends on the others' conventions (which
frames count, how objects are numbered, how a NaN is written).

Long (over 400 lines) on purpose: the whole protocol, both years and every output file of the
official tool, is kept in one module, so that one reading checks it against the official tool.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import math
import multiprocessing as mp
import os
import warnings
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from pipeline.core.mask_png import MaskFormatError, read_mask_values
from pipeline.core.png_rows import FastPathGate
from pipeline.core.errors import FileProblem

from pipeline.evaluation import metrics
from pipeline.sources.base import SourceError
from pipeline.sources import get_source
from pipeline.evaluation.report import plot_per_sequence
from pipeline.core.atomic import atomic_write_bytes
from pipeline.core.config import ConfigError

log = logging.getLogger(__name__)

GLOBAL_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
SEQUENCE_COLUMNS = ["Sequence", "J-Mean", "F-Mean"]
VOID = 255


class EvaluationError(FileProblem):
    """Bad input to the evaluation; the message names the file and the fix."""


# --------------------------------------------------------------------------------------------
# reading masks
# --------------------------------------------------------------------------------------------
def _open_png(path: str | Path, what: str, gate: FastPathGate | None = None) -> np.ndarray:
    """The stored values of a mask PNG (the one mask reader, :mod:`pipeline.core.mask_png`):
    uint8 [H, W], or [H, W, C] for a colour PNG (callers decide what colour means)."""
    try:  # (no stat first: a missing file is the open's FileNotFoundError)
        return read_mask_values(path, allow_colour=True, gate=gate)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise EvaluationError(path, f"{what} does not exist",
                              "write one PNG per evaluated ground-truth frame, named like the "
                              "ground-truth frame (<results>/<sequence>/<frame>.png)") from None
    except OSError as e:
        raise EvaluationError(path, f"cannot read {what} ({e.strerror or e})",
                              "check that it is a readable file (permissions, disk)") from e
    except MaskFormatError as e:
        raise EvaluationError(path, f"cannot read {what}: {e.problem}", e.fix) from e


def read_gt(path: Path, year: int, gate: FastPathGate | None = None) -> np.ndarray:
    """A ground-truth frame: bool (2016, foreground = value > 0) or uint8 ids with void zeroed
    (2017). ``gate``: the sequence's (speed only, :class:`FastPathGate`)."""
    arr = _open_png(path, "ground-truth mask", gate)
    if arr.ndim == 3:
        if year == 2016:
            return np.any(arr[..., :3] > 0, axis=-1)
        raise EvaluationError(path, "ground truth is a colour image, not an indexed PNG of "
                                    "object ids", "use the official DAVIS-2017 annotations")
    if year == 2016:
        return arr > 0
    ids = np.array(arr, dtype=np.int64)
    ids[ids == VOID] = 0
    if ids.size and (ids.min() < 0 or ids.max() > 254):
        raise EvaluationError(path, "ground-truth ids must be 0..254 (255 = void)",
                              "use the official DAVIS-2017 annotations")
    return ids.astype(np.uint8)


def read_result(path: str | Path, year: int, shape: tuple[int, int], n_objects: int,
                gate: FastPathGate | None = None) -> np.ndarray:
    """A result frame: bool (2016) or object ids (2017), checked against the ground truth."""
    arr = _open_png(path, "result frame", gate)
    if arr.shape[:2] != tuple(shape):
        raise EvaluationError(path, f"result is {arr.shape[1]}x{arr.shape[0]} (WxH) but the "
                                    f"ground truth is {shape[1]}x{shape[0]}",
                              "save results at the resolution of the ground truth (480p)")
    if arr.ndim == 3:
        if year == 2016:
            return np.any(arr[..., :3] > 0, axis=-1)
        raise EvaluationError(path, "result is a colour image, not an indexed PNG of object ids",
                              "save DAVIS-2017 results as palette ('P') or grayscale PNGs whose "
                              "values are the object ids (0 = background)")
    if year == 2016:
        return arr > 0
    top = int(arr.max()) if arr.size else 0
    if arr.size and int(arr.min()) < 0:
        top = max(top, VOID)
    if top > n_objects:
        raise EvaluationError(path, f"result holds object id {top} but the sequence has "
                                    f"{n_objects} object(s) (ids 1..{n_objects} from its first "
                                    "ground-truth frame)",
                              "write object ids only (0 = background, no 255/void), numbered "
                              "as in the first ground-truth frame")
    return arr.astype(np.uint8, copy=False)


# --------------------------------------------------------------------------------------------
# one sequence
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SequenceResult:
    name: str
    frames: list[str]  # evaluated frame ids (first and last left out)
    J: np.ndarray  # [objects, frames]
    F: np.ndarray  # [objects, frames]
    T: np.ndarray | None = None  # 2016: 5 x raw T between consecutive evaluated result frames
    eval_t: bool = True

    @property
    def rows(self) -> list[str]:
        return [f"{self.name}_{k + 1}" for k in range(self.J.shape[0])]

    @property
    def t_mean(self) -> float:
        if self.T is None or not np.any(np.isfinite(self.T)):
            return math.nan
        return float(np.nanmean(self.T))


@dataclasses.dataclass(frozen=True)
class _Job:
    name: str
    gt_paths: tuple[Path, ...]  # every annotated frame, in order
    results: Path
    year: int
    temporal: bool
    exact_ties: bool
    eval_t: bool


def evaluate_sequence(job: _Job) -> SequenceResult:
    """Score one sequence (runs in a worker process)."""
    gt_paths = list(job.gt_paths)
    first = read_gt(gt_paths[0], job.year)
    if job.year == 2016:
        n_obj = 1
    else:
        n_obj = int(first.max()) if first.size else 0
        if n_obj == 0:
            raise EvaluationError(gt_paths[0], "the first ground-truth frame holds no object",
                                  "check the annotations (DAVIS-2017 objects are counted from "
                                  "the first frame, 255 is void; for DAVIS-2016 0/255 masks use "
                                  "year 2016)")
    ev = gt_paths[1:-1]
    frames = [p.stem for p in ev]
    if not ev:
        log.warning("%s: fewer than 3 annotated frames, nothing to evaluate", job.name)
        empty = np.zeros((n_obj, 0))
        return SequenceResult(job.name, frames, empty, empty.copy(),
                              np.zeros(0) if job.temporal else None, job.eval_t)
    folder = job.results / job.name
    if not folder.is_dir():
        raise EvaluationError(folder, f"no results for sequence {job.name!r}",
                              "write <results>/<sequence>/<frame>.png for every sequence of the "
                              "split")
    # frame by frame: both masks of a frame are scored while they are in the cache (and no
    # [frames, H, W] stacks: their fresh pages cost a worker more than the scoring of a frame)
    J = np.empty((n_obj, len(ev)))
    F = np.empty((n_obj, len(ev)))
    kernel = metrics.disk(metrics.boundary_radius(first.shape))
    kept = [] if job.temporal and job.year == 2016 else None  # result masks, for T
    folder_s = os.fspath(folder)
    gt_gate, res_gate = FastPathGate(), FastPathGate()  # each folder has one writer
    for t, p in enumerate(ev):
        g = read_gt(p, job.year, gt_gate)
        if g.shape != first.shape:
            raise EvaluationError(p, f"ground-truth frame is {g.shape[1]}x{g.shape[0]}, the first "
                                     f"frame {first.shape[1]}x{first.shape[0]}",
                                  "use the official annotations (one resolution per sequence)")
        r = read_result(os.path.join(folder_s, frames[t] + ".png"), job.year, first.shape,
                        n_obj, res_gate)
        if job.year == 2016:
            J[0, t], F[0, t] = metrics.frame_scores(g, r, kernel)
        else:
            g = np.where(g > n_obj, 0, g)  # ids absent from the first frame are not objects
            for k in range(n_obj):
                J[k, t], F[k, t] = metrics.frame_scores(g == k + 1, r == k + 1, kernel)
        if kept is not None:
            kept.append(r)
    T = None
    if kept is not None:
        T = metrics.T_SCALE * metrics.temporal_instability_sequence(kept, job.exact_ties)
    return SequenceResult(job.name, frames, J, F, T, job.eval_t)


# --------------------------------------------------------------------------------------------
# the whole split
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DavisReport:
    year: int
    split: str
    sequences: list[SequenceResult]
    decay_index: str = "uint8"

    def object_rows(self) -> list[tuple[str, tuple, tuple]]:
        """(row name, (J M, R, D), (F M, R, D)) for every object, in sequence order."""
        out = []
        for s in self.sequences:
            for k, row in enumerate(s.rows):
                out.append((row, metrics.db_statistics(s.J[k], self.decay_index),
                            metrics.db_statistics(s.F[k], self.decay_index)))
        return out

    def global_row(self) -> list[float]:
        rows = self.object_rows()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            J = np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 3)
            F = np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, 3)
            jm, jr, jd = (np.mean(J[:, i]) for i in range(3))
            fm, fr, fd = (np.mean(F[:, i]) for i in range(3))
        return [float(v) for v in ((jm + fm) / 2.0, jm, jr, jd, fm, fr, fd)]

    def per_sequence_rows(self) -> list[tuple[str, float, float]]:
        return [(name, j[0], f[0]) for name, j, f in self.object_rows()]

    @property
    def has_t(self) -> bool:
        return any(s.T is not None for s in self.sequences)

    def global_t(self) -> tuple[float, int]:
        """Mean T-Mean over the ``eval_t`` sequences whose T-Mean is defined, and their count."""
        vals = [s.t_mean for s in self.sequences if s.eval_t and s.T is not None]
        vals = [v for v in vals if not math.isnan(v)]
        return (float(np.mean(vals)) if vals else math.nan), len(vals)


def _fmt(v) -> str:
    if isinstance(v, str):
        return _csv_field(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""  # pandas writes NaN as an empty field
    return "%.3f" % v


def _csv_field(s: str) -> str:
    if any(c in s for c in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'
    return s


def csv_text(columns: list[str], rows: Iterable[Iterable]) -> str:
    """CSV as pandas ``DataFrame.to_csv(index=False, float_format="%.3f")`` writes it."""
    lines = [",".join(_csv_field(c) for c in columns)]
    for r in rows:
        lines.append(",".join(_fmt(v) for v in r))
    return "\n".join(lines) + "\n"


def write_outputs(report: DavisReport, out: str | Path, plot: bool = True) -> dict[str, Path]:
    """Write the CSVs (and the bar plot) into ``out``; returns the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = report.split
    paths = {
        "global": out / f"global_results-{split}.csv",
        "per_sequence": out / f"per-sequence_results-{split}.csv",
    }
    atomic_write_bytes(paths["global"], csv_text(GLOBAL_COLUMNS, [report.global_row()]).encode())
    atomic_write_bytes(paths["per_sequence"],
                       csv_text(SEQUENCE_COLUMNS, report.per_sequence_rows()).encode())
    if report.has_t:
        paths["per_sequence_t"] = out / f"per-sequence_T-{split}.csv"
        paths["global_t"] = out / f"global_T-{split}.csv"
        rows = [(s.name, s.t_mean, str(bool(s.eval_t))) for s in report.sequences]
        atomic_write_bytes(paths["per_sequence_t"],
                           csv_text(["Sequence", "T-Mean", "eval_t"], rows).encode())
        t, n = report.global_t()
        atomic_write_bytes(paths["global_t"],
                           csv_text(["T-Mean", "Sequences"], [(t, str(n))]).encode())
    if plot:
        paths["plot"] = plot_per_sequence(report, out / f"per-sequence_results-{split}.png")
    return paths


def format_tables(report: DavisReport) -> str:
    """The global and per-sequence tables as the official tool prints them."""
    g = report.global_row()
    lines = [f"--------------------------- Global results for {report.split} "
             "---------------------------",
             _table(GLOBAL_COLUMNS, [g]), "",
             f"---------- Per sequence results for {report.split} ----------",
             _table(SEQUENCE_COLUMNS, report.per_sequence_rows())]
    if report.has_t:
        t, n = report.global_t()
        lines += ["", f"T-Mean (DAVIS 2016, {n} eval_t sequence(s)): "
                      + ("nan" if math.isnan(t) else f"{t:.3f}")]
    return "\n".join(lines)


def _table(columns: list[str], rows: list) -> str:
    cells = [[str(c) for c in columns]]
    for r in rows:
        cells.append([v if isinstance(v, str) else
                      ("NaN" if v is None or math.isnan(v) else f"{v:.6f}") for v in r])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(" ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def _eval_t_flags(davis_root: Path) -> dict[str, bool]:
    path = davis_root / "Annotations" / "db_info.yml"
    if not path.is_file():
        return {}
    try:
        import yaml

        info = yaml.safe_load(path.read_text())
        return {str(s["name"]): bool(s.get("eval_t", True)) for s in info.get("sequences", [])}
    except Exception as e:  # noqa: BLE001 - metadata only: fall back to "all sequences"
        log.warning("cannot read %s (%s): T is averaged over all sequences", path, e)
        return {}


def _list_order(path: Path) -> dict[str, int]:
    """Position of each sequence in a DAVIS-2017 split list (first line wins for a repeat)."""
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return {name: i for i, name in reversed(list(enumerate(names)))}


def list_ground_truth(davis_root: str | Path, year: int, split: str,
                      sequences: Iterable[str] | None = None) -> list[tuple[str, tuple[Path, ...]]]:
    """(sequence, annotated frame paths) of a split, through the project's DAVIS readers."""
    name = {2016: "davis2016", 2017: "davis2017"}.get(int(year))
    if name is None:
        raise ConfigError(f"year must be 2016 or 2017, got {year!r}")
    try:
        src = get_source(name, davis_root)
        seqs = src.sequences(split)
    except SourceError as e:
        raise EvaluationError(e.path, e.problem, e.fix) from e
    want = set(sequences) if sequences is not None else None
    out = []
    for s in seqs:
        if want is not None and s.name not in want:
            continue
        paths = tuple(f.mask for f in s.annotated)
        if not paths:
            raise EvaluationError(Path(davis_root) / "Annotations" / "480p" / s.name,
                                  f"sequence {s.name!r} has no annotated frame",
                                  "restore its annotations from the official release")
        out.append((s.name, paths))
    if int(year) == 2017:  # davis2017-evaluation: rows in the order of the split list
        order = _list_order(Path(davis_root) / "ImageSets" / "2017" / f"{split}.txt")
        out.sort(key=lambda item: order.get(item[0], len(order)))
    if want is not None:
        missing = sorted(want - {n for n, _ in out})
        if missing:
            raise EvaluationError(davis_root, f"sequence(s) not in split {split!r}: "
                                              f"{', '.join(missing)}", "check the names")
    if not out:
        raise EvaluationError(davis_root, f"split {split!r} lists no sequence",
                              "check --davis-root and --split")
    return out


def check_results(results: Path, names: Iterable[str], fix: str) -> None:
    """Every sequence (or shot) of ``names`` has a folder under ``results``; else one error
    naming all that are missing."""
    names = list(names)
    missing = [n for n in names if not (results / n).is_dir()]
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20
                                           else "")
        raise EvaluationError(results, f"no results for sequence(s) {shown} "
                                       f"({len(missing)} of {len(names)} missing)", fix)


def _init_worker() -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


def _pool(workers: int) -> cf.ProcessPoolExecutor:
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)


def evaluate_davis(davis_root: str | Path, results: str | Path, year: int, split: str = "val",
                   *, workers: int = 1, temporal: bool | None = None,
                   decay_index: Literal["uint8", "int"] = "uint8",
                   sequences: Iterable[str] | None = None,
                   exact_ties: bool = True) -> DavisReport:
    """Score ``results`` against the DAVIS ground truth of ``split``. ``workers`` > 1 scores
    sequences in parallel processes. ``temporal`` (default: on for 2016, off for 2017) adds the
    DAVIS-2016 T. See the module documentation for the protocol."""
    year = int(year)
    davis_root, results = Path(davis_root), Path(results)
    if not results.is_dir():
        raise EvaluationError(results, "results folder does not exist",
                              "pass --results pointing at <results>/<sequence>/<frame>.png")
    if temporal is None:
        temporal = year == 2016
    if temporal and year != 2016:
        raise ConfigError("T (temporal stability) is a DAVIS-2016 measure: use year=2016")
    flags = _eval_t_flags(davis_root) if temporal else {}
    jobs = [_Job(name, paths, results, year, temporal, exact_ties, flags.get(name, True))
            for name, paths in list_ground_truth(davis_root, year, split, sequences)]
    check_results(results, [j.name for j in jobs if len(j.gt_paths) > 2],
                  "write <results>/<sequence>/<frame>.png for every sequence of the split")
    if workers <= 1 or len(jobs) <= 1:
        done = [evaluate_sequence(j) for j in jobs]
    else:
        with _pool(min(workers, len(jobs))) as ex:
            # longest sequences first, results back in split order
            order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i].gt_paths))
            futs = {i: ex.submit(evaluate_sequence, jobs[i]) for i in order}
            done = [futs[i].result() for i in range(len(jobs))]
    return DavisReport(year, split, done, decay_index)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


__all__ = ["EvaluationError", "SequenceResult", "DavisReport", "evaluate_davis",
           "evaluate_sequence", "write_outputs", "format_tables", "csv_text", "read_gt",
           "read_result", "list_ground_truth", "GLOBAL_COLUMNS", "SEQUENCE_COLUMNS"]
