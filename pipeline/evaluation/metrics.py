"""DAVIS measures: region similarity J, contour accuracy F, temporal stability T, and the
per-sequence statistics (mean, recall, decay).

They reproduce the official DAVIS evaluation code (davis2017-evaluation for J, F and the
statistics; the DAVIS-2016 package for T) on every golden case of
``shared/reference/metrics`` (see ``tests/unit/test_metrics.py``). The rules, in short:

* **J** = |gt & pred| / |gt | pred|; both masks empty -> 1 (one empty -> 0).
* **F** compares boundary maps: a pixel is boundary if it differs from its right, bottom or
  bottom-right neighbour (the image border is never boundary, so a full mask has none). A
  boundary pixel of one map matches if the other map has a boundary pixel within the disk
  x^2 + y^2 <= r^2, r = ceil(0.008 * sqrt(H^2 + W^2)) (8 px at 480x854). Precision, recall and
  F = 2PR / (P + R); both maps empty -> F = 1, exactly one empty -> F = 0.
* **T** (DAVIS 2016): shape-context matching cost between the contours of two consecutive
  masks (see :mod:`pipeline.evaluation.tstab`); NaN when a mask has no contour. The sequence
  protocol multiplies it by 5 (:data:`T_SCALE`).
* **Statistics** of a per-frame series: mean (NaN ignored), recall (fraction strictly above
  0.5; a NaN frame counts as a failure), decay (mean of the first minus mean of the last of
  four overlapping bins).

Everything works on stacks: masks ``[..., H, W]`` give one value per leading index.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from pipeline.evaluation import tstab as _tstab

BOUND_TH = 0.008  # F tolerance, as a fraction of the image diagonal
T_SCALE = 5.0  # the DAVIS-2016 sequence protocol reports 5 x the raw T

try:  # cv2.dilate with the disk kernel is what davis2017-evaluation itself calls
    import cv2 as _cv2
except ImportError:  # pragma: no cover - opencv is a dependency of the evaluation extra
    _cv2 = None


# --------------------------------------------------------------------------------------------
# J
# --------------------------------------------------------------------------------------------
def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None):
    """Region similarity J of ``pred`` against ``gt`` (bool-like, ``[..., H, W]``).

    Pixels where ``void`` is true are left out (the official ``void_pixels`` argument; the
    semi-supervised DAVIS protocol does not use it). Returns a float for 2-D input, else an
    array over the leading dimensions."""
    gt = np.asarray(gt).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"J: shapes differ: gt {gt.shape} vs prediction {pred.shape}")
    inter = gt & pred
    union = gt | pred
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        inter &= keep
        union &= keep
    i = np.count_nonzero(inter, axis=(-2, -1))
    u = np.count_nonzero(union, axis=(-2, -1))
    return _ratio_or_one(i, u)


def _ratio_or_one(num, den):
    num = np.asarray(num)
    den = np.asarray(den)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = num / den
    j = np.where(den == 0, 1.0, j)
    return float(j) if j.ndim == 0 else j


def jaccard_from_labels(gt: np.ndarray, pred: np.ndarray, n_objects: int) -> np.ndarray:
    """J of every object 1..n_objects at once from label maps ``[N, H, W]`` (one pass over the
    pixels via a per-frame confusion count). Returns ``[n_objects, N]``. Labels outside
    0..n_objects count as background in ``gt`` and must not occur in ``pred``."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"J: shapes differ: gt {gt.shape} vs prediction {pred.shape}")
    k = n_objects + 1
    n = gt.shape[0]
    gt = gt.reshape(n, -1)
    pred = pred.reshape(n, -1)
    out = np.empty((n_objects, n))
    for t in range(n):
        g = gt[t].astype(np.intp)
        g[(g < 0) | (g > n_objects)] = 0
        p = pred[t].astype(np.intp)
        if p.size and (p.min() < 0 or p.max() > n_objects):
            raise ValueError(f"prediction of frame {t} holds ids outside 0..{n_objects}")
        cm = np.bincount(g * k + p, minlength=k * k).reshape(k, k)
        inter = np.diag(cm)[1:]
        union = cm.sum(axis=1)[1:] + cm.sum(axis=0)[1:] - inter
        out[:, t] = _ratio_or_one(inter, union)
    return out


# --------------------------------------------------------------------------------------------
# F
# --------------------------------------------------------------------------------------------
def boundary_map(seg: np.ndarray) -> np.ndarray:
    """Boundary pixels of a mask (``[..., H, W]``): pixels that differ from their right, bottom
    or bottom-right neighbour; in the last row only the right neighbour counts, in the last
    column only the bottom one, and the bottom-right corner is never boundary."""
    s = np.asarray(seg).astype(bool, copy=False)
    b = np.zeros(s.shape, bool)
    # interior: right, bottom, bottom-right (written in place: no temporaries of the window)
    core, inner = s[..., :-1, :-1], b[..., :-1, :-1]
    np.not_equal(core, s[..., :-1, 1:], out=inner)
    inner |= core ^ s[..., 1:, :-1]
    inner |= core ^ s[..., 1:, 1:]
    np.not_equal(s[..., -1, :-1], s[..., -1, 1:], out=b[..., -1, :-1])  # last row: right
    np.not_equal(s[..., :-1, -1], s[..., 1:, -1], out=b[..., :-1, -1])  # last column: bottom
    return b


def boundary_radius(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Tolerance radius in pixels for an image of ``shape`` (..., H, W)."""
    if bound_th >= 1:  # the official reads a tolerance >= 1 as the radius itself
        if bound_th != int(bound_th):
            raise ValueError(f"a tolerance >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    h, w = shape[-2], shape[-1]
    return int(np.ceil(bound_th * np.linalg.norm((h, w))))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element: every (y, x) with x^2 + y^2 <= r^2 (uint8, (2r+1)^2)."""
    r = int(radius)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def dilate(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary dilation of a 2-D mask by a symmetric kernel, zero outside the image (cv2 when
    available, else scipy; both give the same result)."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if _cv2 is not None:
        return _cv2.dilate(m, kernel) > 0
    from scipy import ndimage

    return ndimage.binary_dilation(m.astype(bool), structure=kernel.astype(bool))


def _f_from_counts(n_fg, n_gt, m_fg, m_gt) -> float:
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = m_fg / float(n_fg)
        recall = m_gt / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def f_from_boundaries(pred_b: np.ndarray, gt_b: np.ndarray, kernel: np.ndarray,
                      crop: bool = True) -> float:
    """F of one frame from its two boundary maps. With ``crop``, both dilations are computed on
    the bounding box of the boundary pixels only (no boundary pixel lies outside it, so the
    result is the same as dilating the whole image); a caller whose maps are already that
    window (:func:`frame_scores`) passes ``crop=False``."""
    n_fg = int(np.count_nonzero(pred_b))
    n_gt = int(np.count_nonzero(gt_b))
    if n_fg == 0 or n_gt == 0:
        return _f_from_counts(n_fg, n_gt, 0, 0)
    if crop:
        both = pred_b | gt_b
        rows = np.flatnonzero(both.any(axis=1))
        cols = np.flatnonzero(both.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        pred_b, gt_b = pred_b[r0:r1, c0:c1], gt_b[r0:r1, c0:c1]
    return _f_from_counts(n_fg, n_gt, _matched(pred_b, gt_b, kernel),
                          _matched(gt_b, pred_b, kernel))


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
               bound_th: float = BOUND_TH):
    """Contour accuracy F of ``pred`` against ``gt`` (``[..., H, W]``); ``void`` pixels are
    set to background in both before the boundaries are taken (the official ``void_pixels``).
    Returns a float for 2-D input, else an array over the leading dimensions."""
    gt = np.asarray(gt).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"F: shapes differ: gt {gt.shape} vs prediction {pred.shape}")
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        gt = gt & keep
        pred = pred & keep
    kernel = disk(boundary_radius(gt.shape, bound_th))
    gb = boundary_map(gt)
    pb = boundary_map(pred)
    lead = gt.shape[:-2]
    flat_g = gb.reshape((-1,) + gt.shape[-2:])
    flat_p = pb.reshape((-1,) + gt.shape[-2:])
    out = np.array([f_from_boundaries(flat_p[i], flat_g[i], kernel) for i in range(len(flat_g))])
    return float(out[0]) if not lead else out.reshape(lead)


def _window(m_a: np.ndarray, m_b: np.ndarray, union: np.ndarray | None = None):
    """Rows/cols [r0, r1) x [c0, c1) that hold every boundary pixel of two 2-D masks (their
    union's bounding box grown by one pixel up and left), or None when both are empty."""
    u = (m_a | m_b) if union is None else union
    if _cv2 is not None and u.dtype == bool and u.flags.c_contiguous:
        x, y, w, h = _cv2.boundingRect(u.view(np.uint8))  # the non-zero pixels' box, in C
        if w == 0:
            return None
        return max(y - 1, 0), y + h, max(x - 1, 0), x + w
    rows = np.flatnonzero(u.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(u.any(axis=0))
    return (max(int(rows[0]) - 1, 0), int(rows[-1]) + 1, max(int(cols[0]) - 1, 0), int(cols[-1]) + 1)


def boundary_map_window(seg: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``boundary_map(seg)[r0:r1, c0:c1]``, computed from that window plus one row and column
    (when the image has them) instead of the whole image."""
    h, w = seg.shape[-2:]
    e = boundary_map(seg[..., r0:min(r1 + 1, h), c0:min(c1 + 1, w)])
    return e[..., :r1 - r0, :c1 - c0]


def _matched(b: np.ndarray, other: np.ndarray, kernel: np.ndarray) -> int:
    """Boundary pixels of ``b`` within the kernel of a boundary pixel of ``other``."""
    b = np.asarray(b).astype(bool, copy=False)
    other = np.asarray(other).astype(bool, copy=False)
    if _cv2 is not None:  # on uint8 views of the bool maps: no conversion copies
        return int(np.count_nonzero(b.view(np.uint8) & _cv2.dilate(other.view(np.uint8), kernel)))
    return int(np.count_nonzero(b & dilate(other, kernel)))


def frame_scores(gt: np.ndarray, pred: np.ndarray, kernel: np.ndarray) -> tuple[float, float]:
    """(J, F) of one frame's 2-D boolean masks, working only on the window that holds both
    objects and their boundaries: the same numbers as :func:`jaccard` and :func:`boundary_f`."""
    gt = np.asarray(gt).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    u = gt | pred
    win = _window(gt, pred, u)
    if win is None:
        return 1.0, 1.0  # both empty: J = 1; no boundary on either side: F = 1
    r0, r1, c0, c1 = win
    inter = np.count_nonzero(gt[r0:r1, c0:c1] & pred[r0:r1, c0:c1])
    union = np.count_nonzero(u[r0:r1, c0:c1])
    j = 1.0 if union == 0 else inter / union
    # the window holds every boundary pixel: dilating it = dilating the image (zero outside)
    f = f_from_boundaries(boundary_map_window(pred, r0, r1, c0, c1),
                          boundary_map_window(gt, r0, r1, c0, c1), kernel, crop=False)
    return float(j), f


# --------------------------------------------------------------------------------------------
# T
# --------------------------------------------------------------------------------------------
def temporal_instability(mask_t: np.ndarray, mask_t1: np.ndarray, exact_ties: bool = True) -> float:
    """Raw DAVIS-2016 temporal (in)stability between the masks of two consecutive frames (no
    x5 factor; lower is more stable). NaN when either mask has no contour (empty, or only
    single pixels and one-pixel lines). ``exact_ties=False`` skips the replay of the official
    shortest-path search on exact cost ties (faster; may differ slightly)."""
    return _tstab.t_stability(np.asarray(mask_t), np.asarray(mask_t1), exact_ties)


def temporal_instability_sequence(masks, exact_ties: bool = True) -> np.ndarray:
    """Raw T between consecutive masks (``len(masks) - 1`` values); each frame's contour is
    described once."""
    return _tstab.t_stability_sequence(masks, exact_ties)


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------
DecayIndex = Literal["uint8", "int"]


def decay_bins(n: int, index: DecayIndex = "uint8") -> np.ndarray:
    """Edges of the four overlapping decay bins of a series of ``n`` values (bin i is
    ``values[e[i]:e[i+1] + 1]``). ``index="uint8"`` reproduces the official cast of the edges to
    uint8, which wraps around past 256 values (e.g. n = 300 gives a last edge of 43, an empty
    last bin and a NaN decay); ``"int"`` keeps the true indices."""
    e = np.round(np.linspace(1, n, 5) + 1e-10) - 1
    e = e.astype(np.int64)
    if index == "uint8":
        e = e % 256
    elif index != "int":
        raise ValueError(f"decay index must be 'uint8' or 'int', got {index!r}")
    return e


def db_statistics(values, decay_index: DecayIndex = "uint8") -> tuple[float, float, float]:
    """(mean, recall, decay) of a per-frame series, as the official ``db_statistics``: mean
    ignores NaN; recall = fraction of values strictly above 0.5 (NaN counts as a failure);
    decay = nanmean(first bin) - nanmean(last bin). The caller removes the first and last
    frame of a sequence beforehand."""
    v = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        M = np.nanmean(v)
        R = np.nanmean(v > 0.5)
        e = decay_bins(len(v), decay_index)
        bins = [v[e[i]:e[i + 1] + 1] for i in range(4)]
        D = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(M), float(R), float(D)


__all__ = ["BOUND_TH", "T_SCALE", "jaccard", "jaccard_from_labels", "boundary_map",
           "boundary_map_window", "frame_scores",
           "boundary_radius", "disk", "dilate", "boundary_f", "f_from_boundaries",
           "temporal_instability", "temporal_instability_sequence", "decay_bins",
           "db_statistics"]
