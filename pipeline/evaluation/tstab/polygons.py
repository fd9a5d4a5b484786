"""Step 3 of T: curves -> polygons: corner coordinates, psimpl's radial-distance and Douglas-Peucker
simplification, orientation (outer clockwise, holes counter-clockwise)."""

from __future__ import annotations

import struct

import numpy as np

from pipeline.evaluation.tstab.jordan import jordan
from pipeline.evaluation.tstab.params import CONT_TH
from pipeline.evaluation.tstab.trace import Grid, trace


# --------------------------------------------------------------------------------------------
# 3. polygons
# --------------------------------------------------------------------------------------------
def _to_corners(start: tuple[int, int], cracks: list) -> np.ndarray:
    """Crack midpoints -> the corners between them (closed: the start corner is repeated)."""
    c = np.asarray(cracks, dtype=np.int64)
    n = len(c)
    out = np.empty((n + 1, 2), np.int64)
    out[0] = start
    # the step over crack k goes from corner k to corner k+1 = 2 * crack_k - corner_k
    x, y = start
    cl = c.tolist()
    for k in range(n):
        x, y = 2 * cl[k][0] - x, 2 * cl[k][1] - y
        out[k + 1] = (x, y)
    if (x, y) != tuple(start):
        raise RuntimeError("contour does not close")
    return out


def _radial_distance(pts: list, tol: float) -> list:
    """Drop points closer than ``tol`` to the last kept point (first and last always kept)."""
    n = len(pts)
    if n < 3:
        return pts
    tol2 = tol * tol
    out = [pts[0]]
    cx, cy = pts[0]
    for i in range(1, n - 1):
        px, py = pts[i]
        dx, dy = cx - px, cy - py
        if dx * dx + dy * dy < tol2:
            continue
        cx, cy = px, py
        out.append(pts[i])
    out.append(pts[-1])
    return out


_F32 = struct.Struct("f")
_EXACT32 = float(2 ** 24)  # integers up to this are exact in float32


def _f32(v: float) -> float:
    """Round a double to float32 (and back)."""
    return _F32.unpack(_F32.pack(v))[0]


def _seg_dist2(s1x, s1y, s2x, s2y, px, py) -> float:
    """Squared distance from p to the segment s1-s2; the projection factor is a float32 (as in
    the official simplification library). Coordinates are integers, so every other step is
    exact in double precision."""
    vx, vy = s2x - s1x, s2y - s1y
    wx, wy = px - s1x, py - s1y
    cw = wx * vx + wy * vy
    if cw <= 0:
        return wx * wx + wy * wy
    cv = vx * vx + vy * vy
    if cv <= cw:
        dx, dy = px - s2x, py - s2y
        return dx * dx + dy * dy
    # float32(cw) / float32(cv) rounded to float32: the quotient computed in double and then
    # rounded is the correctly rounded float32 quotient (53 >= 2 * 24 + 2 bits)
    if cw > _EXACT32:
        cw = _f32(cw)
    if cv > _EXACT32:
        cv = _f32(cv)
    f = _f32(cw / cv)
    dx, dy = px - (s1x + f * vx), py - (s1y + f * vy)
    return dx * dx + dy * dy


def _seg_dist2_vec(s1, s2, p: np.ndarray) -> np.ndarray:
    vx, vy = float(s2[0] - s1[0]), float(s2[1] - s1[1])
    wx, wy = p[:, 0] - float(s1[0]), p[:, 1] - float(s1[1])
    cw = wx * vx + wy * vy
    cv = vx * vx + vy * vy
    d1 = wx * wx + wy * wy
    ex, ey = p[:, 0] - float(s2[0]), p[:, 1] - float(s2[1])
    d2 = ex * ex + ey * ey
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (cw.astype(np.float32) / np.float32(cv)).astype(np.float64)
    qx = p[:, 0] - (s1[0] + f * vx)
    qy = p[:, 1] - (s1[1] + f * vy)
    d3 = qx * qx + qy * qy
    return np.where(cw <= 0, d1, np.where(cv <= cw, d2, d3))


def _douglas_peucker(pts: list, tol: float) -> list:
    """Douglas-Peucker with the radial-distance pre-pass of the official library: a point is a
    key when it is strictly farther than ``tol`` from the chord of its sub-polyline and no point
    is farther (equal distances: the later point)."""
    if len(pts) < 3 or tol == 0:
        return pts
    red = _radial_distance(pts, tol)
    n = len(red)
    tol2 = tol * tol
    P = None
    keys = bytearray(n)
    keys[0] = keys[-1] = 1
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        s1x, s1y = red[a]
        s2x, s2y = red[b]
        if b - a < 12:
            best, bd = a + 1, -1.0
            for k in range(a + 1, b):
                d = _seg_dist2(s1x, s1y, s2x, s2y, red[k][0], red[k][1])
                if d >= bd:
                    best, bd = k, d
        else:
            if P is None:
                P = np.asarray(red, dtype=np.float64)
            d = _seg_dist2_vec(P[a], P[b], P[a + 1:b])
            k = len(d) - 1 - int(np.argmax(d[::-1]))  # the last maximum
            best, bd = a + 1 + k, float(d[k])
        if tol2 < bd:
            keys[best] = 1
            stack.append((best, b))
            stack.append((a, best))
    return [p for p, k in zip(red, keys) if k]


def _is_clockwise(poly: np.ndarray) -> bool:
    nxt = np.roll(poly, -1, axis=0)
    terms = ((nxt[:, 0] - poly[:, 0]) * (nxt[:, 1] + poly[:, 1])).astype(np.float32)
    total = np.cumsum(terms, dtype=np.float32)[-1] if len(terms) else np.float32(0)
    return bool(total > 0)


def _foreground_inside(g: Grid, corners: np.ndarray, first_crack) -> bool:
    """Whether the curve encloses the foreground next to it (an outer boundary) or the
    background (a hole), from its first crack and the sign of its area."""
    area = int(np.sum((np.roll(corners[:, 0], -1) - corners[:, 0]) *
                      (np.roll(corners[:, 1], -1) + corners[:, 1])))
    cx, cy = first_crack
    step = corners[1] - corners[0]
    if cx % 2:  # vertical crack: pixels left/right of it, step along x
        r = (cx - 1) // 2
        lo, hi = (r, cy // 2 - 1), (r, cy // 2)  # -y side, +y side
        inside_hi = (area < 0) == (step[0] > 0)
    else:  # horizontal crack: pixels above/below, step along y
        c = (cy - 1) // 2
        lo, hi = (cx // 2 - 1, c), (cx // 2, c)  # -x side, +x side
        inside_hi = (area > 0) == (step[1] > 0)
    px = hi if inside_hi else lo
    return bool(g.pad[px[0] + 1, px[1] + 1])


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (first point repeated) of a mask's boundaries, as (x=col, y=row) int
    arrays, simplified and oriented as the DAVIS-2016 tool does; single pixels and one-pixel
    lines give no polygon."""
    g = Grid(mask)
    if not g.cont.any():
        return []
    junctions, pieces = trace(g)
    out = []
    for jid, cracks in jordan(junctions, pieces):
        corners = _to_corners(junctions[jid - 1], cracks)
        outer = _foreground_inside(g, corners, cracks[0])
        poly = _douglas_peucker(corners.tolist(), 0.1)
        poly = np.asarray(_douglas_peucker(poly, CONT_TH), dtype=np.int64)
        if _is_clockwise(poly) != outer:
            poly = poly[::-1]
        poly = poly // 2
        if len(poly) <= 3:
            continue
        out.append(np.ascontiguousarray(poly[:, ::-1]))
    return out
