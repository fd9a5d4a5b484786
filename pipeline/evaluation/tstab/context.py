"""Step 4a of T: the longest contour densified, its shape contexts, and the chi^2 cost matrix
between two contours."""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.tstab.params import (EPS, CONT_TH_UP, NBINS_R, NBINS_THETA, R_INNER,
                                              R_OUTER)


# --------------------------------------------------------------------------------------------
# 4. shape contexts and matching
# --------------------------------------------------------------------------------------------
def longest(polys: list[np.ndarray]) -> np.ndarray:
    best, n = None, 0
    for p in polys:
        if n <= len(p):
            best, n = p, len(p)
    return best


def upsample_contour(cont: np.ndarray, th: float = CONT_TH_UP) -> np.ndarray:
    """Insert points so that no segment is longer than ``th`` (float32, as the official)."""
    c = np.asarray(cont, np.float32)
    th32 = np.float32(th)
    diff = c[1:] - c[:-1]
    nv = np.sqrt(diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1])
    out = [c[:1]]
    for i in range(len(nv)):
        if nv[i] > th32:
            n = int(np.ceil(np.float32(nv[i] / th32)))
            vec = diff[i] / np.float32(n)
            steps = np.empty((n - 1, 2), np.float32)
            cur = out[-1][-1].copy()
            for j in range(n - 1):
                cur = (cur + vec).astype(np.float32)
                steps[j] = cur
            out.append(steps)
        out.append(c[i + 1:i + 2])
    return np.concatenate(out, axis=0)


def shape_context(pts: np.ndarray) -> np.ndarray:
    """Shape-context histograms (n x 60 int) of the points (x, y), log-polar bins relative to
    the mean pairwise distance (self pairs included, as in the official)."""
    from scipy.spatial.distance import pdist, squareform

    B = np.asarray(pts, np.float32)
    n = len(B)
    r = squareform(pdist(B.astype(np.float64))).T
    everyone = np.ones(n, bool)
    mean_dist = np.mean(r[everyone].T[everyone].T)
    rn = r / mean_dist
    edges = np.logspace(np.log10(R_INNER), np.log10(R_OUTER), NBINS_R)
    rq = np.zeros((n, n))
    for m in range(NBINS_R):
        rq = rq + (rn < edges[m])
    ones = np.ones((1, n))
    y = B[:, 1].reshape(-1, 1).dot(ones) - ones.T.dot(B[:, 1].reshape(1, -1))
    x = B[:, 0].reshape(-1, 1).dot(ones) - ones.T.dot(B[:, 0].reshape(1, -1))
    theta = np.arctan2(y, x).T
    theta2 = np.fmod(np.fmod(theta, 2 * np.pi) + 2 * np.pi, 2 * np.pi)
    tq = 1 + np.floor(theta2 / (2 * np.pi / float(NBINS_THETA)))
    tq = np.minimum(tq, NBINS_THETA)  # 2*pi - tiny rounding to bin 13 (the official would fail)
    keep = rq > 0
    rows = np.nonzero(keep)[0]
    bins = (rq[keep].astype(np.int64) - 1) * NBINS_THETA + (tq[keep].astype(np.int64) - 1)
    flat = rows * (NBINS_THETA * NBINS_R) + bins
    BH = np.bincount(flat, minlength=n * NBINS_THETA * NBINS_R)
    return BH.reshape(n, NBINS_THETA * NBINS_R).astype(int)


def hist_cost(BH1: np.ndarray, BH2: np.ndarray, chunk_bytes: int = 1 << 21) -> np.ndarray:
    """Chi-square cost between every pair of (normalised) histograms: 0.5 * sum over bins of
    (a - b)^2 / (a + b + eps), summed over the contiguous bin axis (the same floating-point
    order as the official's numpy code)."""
    a = BH1 / (np.sum(BH1, axis=1, keepdims=True) + EPS)
    b = BH2 / (np.sum(BH2, axis=1, keepdims=True) + EPS)
    n1, n2, k = len(a), len(b), a.shape[1]
    out = np.empty((n1, n2))
    step = max(1, chunk_bytes // max(1, n2 * k * 8))
    t2 = b[None, :, :]
    for s in range(0, n1, step):
        t1 = a[s:s + step, None, :]
        num = t1 - t2
        np.square(num, out=num)
        den = t1 + t2
        den += EPS
        num /= den
        out[s:s + step] = np.sum(num, axis=2)
    out *= 0.5
    return out
