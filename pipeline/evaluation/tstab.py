"""Temporal stability T of DAVIS 2016, re-implemented in numpy.

The DAVIS-2016 measure (Perazzi et al., CVPR 2016) compares the contour of a mask at frame t with
the contour at frame t+1: both are turned into polygons, densified, described with shape contexts,
aligned by dynamic time warping, and T is the mean matching cost of the aligned points. The
official tool does the geometry in a C++ module; this module follows the same steps so that the
numbers agree (see ``tests/test_metrics.py`` for the tolerance reached on the golden cases):

1. **Contour tracing** on the "crack" grid: coordinates are doubled, pixel (r, c) sits at
   (2r+1, 2c+1) and the boundary between two pixels at the midpoint of their centres. A corner
   whose four incident cracks are all boundary (a diagonal, checkerboard touch) is a *junction*;
   the cracks between junctions are traced into pieces, and every closed boundary without a
   junction gets an artificial one at the top end of its first vertical crack in row-major order.
2. **Jordan curves**: pieces are chained into closed curves; at a junction the walk never goes
   straight on (it turns), so that each curve keeps the foreground on one side.
3. Crack midpoints become corner coordinates; each curve is simplified with Douglas-Peucker
   (radial-distance pre-pass, tolerance 0.1 then 3 on the doubled grid), outer boundaries are
   oriented clockwise and holes counter-clockwise, coordinates are halved, curves of three points
   or fewer (single pixels, one-pixel lines) are dropped. No curve left -> T is NaN.
4. The longest curve (point count; the last one on ties) is densified so that no segment is
   longer than 3 px (float32 arithmetic), shape contexts (12 angle x 5 log-radius bins, radii
   from 1/8 to 2 times the mean pairwise distance) are computed for every point, and the chi^2
   cost matrix between the two point sets is aligned by a shortest path on the grid graph
   (right, down and diagonal moves; the cost of entering a node is its matrix entry), first from
   (0, 0), then again after rotating both contours to start just after the cheapest node of the
   first path. Pairs are made one-to-one (cheapest pair per point of each side) and T is the mean
   cost of the remaining pairs.

All of this is translation invariant: a shape and its shifted copy give T = 0.

Re-implementation notes (each needed to reproduce the official numbers bit for bit):

* Whether a curve is an outer boundary or a hole is read from the side its foreground lies on
  (the official tests nesting with point-in-polygon; the two agree because the turning rule keeps
  the foreground on one side of every curve).
* The simplification follows the official library (psimpl): radial-distance pre-pass with strict
  ``<``, keys strictly farther than the tolerance, the later point on equal distances, the
  point-to-segment projection factor rounded to float32.
* The contour order of the official container (junction ids in reverse insertion order) decides
  where each curve starts, which matters for the alignment.
* The shortest path: distances by dynamic programming (the same floating-point sums as the
  official Dijkstra); exact distance ties, which the repeated closing point of every contour
  produces, are resolved by replaying Boost's 4-ary-heap Dijkstra (:func:`_dijkstra_heap`).
* Shape contexts, chi^2 costs and the final mean use the same numpy operations in the same order
  as the official Python code.
"""

from __future__ import annotations

import math
import struct

import numpy as np

CONT_TH = 3.0  # polygon simplification tolerance (on the doubled grid)
CONT_TH_UP = 3.0  # densification: longest segment allowed, in pixels
NBINS_THETA = 12
NBINS_R = 5
R_INNER = 1.0 / 8.0
R_OUTER = 2.0
_EPS = 2.2204e-16


# --------------------------------------------------------------------------------------------
# 1. tracing
# --------------------------------------------------------------------------------------------
class _Grid:
    """Boundary cracks of a mask on the doubled grid, with a one-cell margin (offset +1)."""

    def __init__(self, mask: np.ndarray):
        m = np.asarray(mask).astype(bool)
        sx, sy = m.shape
        self.sx, self.sy = sx, sy
        pad = np.zeros((sx + 2, sy + 2), bool)
        pad[1:-1, 1:-1] = m
        self.pad = pad
        cont = np.zeros((2 * sx + 3, 2 * sy + 3), bool)
        # vertical cracks: between (r, c) and (r, c+1), c = -1..sy-1 -> (2r+1, 2c+2)
        cont[2:2 * sx + 1:2, 1:2 * sy + 2:2] = pad[1:-1, :-1] ^ pad[1:-1, 1:]
        # horizontal cracks: between (r, c) and (r+1, c), r = -1..sx-1 -> (2r+2, 2c+1)
        cont[1:2 * sx + 2:2, 2:2 * sy + 1:2] = pad[:-1, 1:-1] ^ pad[1:, 1:-1]
        self.cont = cont
        # flat views for fast scalar access; index of grid point (x, y) = (x+1)*W + (y+1)
        self.W = 2 * sy + 3
        self.cont_flat = cont.ravel().tobytes()
        self.visited = bytearray(cont.size)
        self.junction_id: dict[int, int] = {}  # flat index of a corner -> junction id (1-based)

    def key(self, x: int, y: int) -> int:
        return (x + 1) * self.W + (y + 1)


def _explore(g: _Grid, start: tuple[int, int], first_crack: tuple[int, int]):
    """Follow the boundary from a junction along ``first_crack`` until a junction is reached.
    Returns (cracks, end junction id)."""
    W = g.W
    visited, cont, jid = g.visited, g.cont_flat, g.junction_id
    cracks = []
    visited[g.key(*start)] = 1
    tx, ty = start  # the corner being walked to
    cx, cy = first_crack
    while True:
        if cx % 2:  # crack between two pixels of one row: its ends are above and below
            e1x, e1y, e2x, e2y = cx + 1, cy, cx - 1, cy
        else:
            e1x, e1y, e2x, e2y = cx, cy - 1, cx, cy + 1
        k1 = (e1x + 1) * W + e1y + 1
        k2 = (e2x + 1) * W + e2y + 1
        if not visited[k1]:
            tx, ty = e1x, e1y
        elif not visited[k2]:
            tx, ty = e2x, e2y
        elif e1x == tx and e1y == ty:
            tx, ty = e2x, e2y
        else:
            tx, ty = e1x, e1y
        visited[(cx + 1) * W + cy + 1] = 1
        kt = (tx + 1) * W + ty + 1
        visited[kt] = 1
        cracks.append((cx, cy))
        end = jid.get(kt)
        if end is not None:
            return cracks, end
        # next unvisited boundary crack around the corner (down, up, right, left)
        if cont[kt + W] and not visited[kt + W]:
            cx, cy = tx + 1, ty
        elif cont[kt - W] and not visited[kt - W]:
            cx, cy = tx - 1, ty
        elif cont[kt + 1] and not visited[kt + 1]:
            cx, cy = tx, ty + 1
        else:
            cx, cy = tx, ty - 1


class _Piece:
    __slots__ = ("orig", "end", "cracks")

    def __init__(self, orig: int, end: int, cracks: list):
        self.orig, self.end, self.cracks = orig, end, cracks


def _trace(g: _Grid):
    """Junctions (id -> corner) and boundary pieces, in the official exploration order."""
    sx, sy, cont = g.sx, g.sy, g.cont
    junctions: list[tuple[int, int]] = []  # index id-1 -> corner position
    pieces: list[_Piece] = []
    # real junctions: interior corners with four boundary cracks, row-major
    if sx > 1 and sy > 1:
        cx = np.arange(2, 2 * sx, 2)[:, None]
        cy = np.arange(2, 2 * sy, 2)[None, :]
        four = (cont[cx + 1, cy + 2] & cont[cx + 2, cy + 1] & cont[cx + 1, cy] & cont[cx, cy + 1])
        for i, j in zip(*np.nonzero(four)):
            x, y = int(cx[i, 0]), int(cy[0, j])
            junctions.append((x, y))
            g.junction_id[g.key(x, y)] = len(junctions)
    stack = []
    for jid, (x, y) in enumerate(junctions, 1):
        for c in ((x, y + 1), (x + 1, y), (x, y - 1), (x - 1, y)):
            stack.append((jid, c))
    while stack:
        jid, c = stack.pop()
        if g.visited[g.key(*c)]:
            continue
        cracks, end = _explore(g, junctions[jid - 1], c)
        pieces.append(_Piece(jid, end, cracks))
    # closed boundaries without junction: start at the first unvisited vertical crack
    rows, cols = np.nonzero(cont[2:2 * sx + 1:2, 1:2 * sy + 2:2])
    for r, c in zip(rows.tolist(), cols.tolist()):
        x, y = 2 * r + 1, 2 * c  # c = column index + 1 (-1..sy-1 shifted)
        if g.visited[g.key(x, y)]:
            continue
        pos = (x - 1, y)
        junctions.append(pos)
        jid = len(junctions)
        g.junction_id[g.key(*pos)] = jid
        cracks, end = _explore(g, pos, (x, y))
        pieces.append(_Piece(jid, end, cracks))
    return junctions, pieces


# --------------------------------------------------------------------------------------------
# 2. Jordan curves
# --------------------------------------------------------------------------------------------
def _other_end(p: _Piece, j: int) -> int:
    return p.end if j == p.orig else p.orig


def _first_crack_at(p: _Piece, j: int):
    return p.cracks[0] if p.orig == j else p.cracks[-1]


def _jordan(junctions, pieces):
    """Chain the pieces into closed curves. Returns [(start junction id, cracks)]."""
    on_junction: dict[int, set] = {}
    for jid in range(1, len(junctions) + 1):
        on_junction[jid] = set()
    for i, p in enumerate(pieces):
        on_junction[p.orig].add(i)
        on_junction[p.end].add(i)
    # The iteration order of the official container is the reverse of insertion order (each
    # id has its own hash bucket); a dict's last key plays the role of its first element.
    curves = []

    def take(j: int, i: int) -> None:
        s = on_junction.get(j)
        if s is None:
            s = on_junction[j] = set()
        s.discard(i)
        if not s:
            del on_junction[j]

    def close_cycle(j: int, walk: list, swept: set) -> int:
        k = next(n for n, (jj, _) in enumerate(walk) if jj == j)
        cracks: list = []
        last = j
        for jj, i in walk[k:]:
            p = pieces[i]
            if p.orig == jj:
                cracks.extend(p.cracks)
                last = p.end
            else:
                cracks.extend(reversed(p.cracks))
                last = p.orig
            swept.discard(jj)
        assert last == j, "contour chaining failed"
        del walk[k:]
        curves.append((j, cracks))
        return walk[-1][1] if walk else -1

    while on_junction:
        j = next(reversed(on_junction))
        i = min(on_junction[j])
        take(j, i)
        take(_other_end(pieces[i], j), i)
        walk = [(j, i)]
        swept = {j}
        nxt = _other_end(pieces[i], j)
        if nxt in swept:
            close_cycle(nxt, walk, swept)
        while swept:
            j = nxt
            cand = sorted(on_junction.get(j, ()))
            if not cand:
                raise RuntimeError("contour chaining failed: dangling boundary piece")
            a = _first_crack_at(pieces[cand[0]], j)
            b = _first_crack_at(pieces[i], j)
            i = cand[1] if (a[0] == b[0] or a[1] == b[1]) else cand[0]
            s = on_junction[j]
            s.discard(i)
            if not s:
                del on_junction[j]
            e = _other_end(pieces[i], j)
            if e in on_junction:
                on_junction[e].discard(i)
                if not on_junction[e]:
                    del on_junction[e]
            swept.add(j)
            walk.append((j, i))
            nxt = e
            if nxt in swept:
                i = close_cycle(nxt, walk, swept)
    return curves


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


def _foreground_inside(g: _Grid, corners: np.ndarray, first_crack) -> bool:
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
    g = _Grid(mask)
    if not g.cont.any():
        return []
    junctions, pieces = _trace(g)
    out = []
    for jid, cracks in _jordan(junctions, pieces):
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


# --------------------------------------------------------------------------------------------
# 4. shape contexts and matching
# --------------------------------------------------------------------------------------------
def _longest(polys: list[np.ndarray]) -> np.ndarray:
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
    a = BH1 / (np.sum(BH1, axis=1, keepdims=True) + _EPS)
    b = BH2 / (np.sum(BH2, axis=1, keepdims=True) + _EPS)
    n1, n2, k = len(a), len(b), a.shape[1]
    out = np.empty((n1, n2))
    step = max(1, chunk_bytes // max(1, n2 * k * 8))
    t2 = b[None, :, :]
    for s in range(0, n1, step):
        t1 = a[s:s + step, None, :]
        num = t1 - t2
        np.square(num, out=num)
        den = t1 + t2
        den += _EPS
        num /= den
        out[s:s + step] = np.sum(num, axis=2)
    out *= 0.5
    return out


def _shortest_path(cost: np.ndarray, exact_ties: bool = True):
    """Cheapest monotone path (right, down, diagonal moves) from node (0, 0) to the last node,
    the cost of entering a node being its entry; returns the path from the last node back to
    (0, 0) (float array of (row, col)) and the node of least entry cost on it (the start
    excluded; the first one met walking back from the end).

    The official tool runs Boost's Dijkstra on the grid graph. The distances are computed here by
    dynamic programming (the same floating-point sums); the path follows, from each node, the
    neighbour with the smallest distance, which is the node Dijkstra settles first. When two
    neighbours have exactly the same distance (this happens: the closing point of a contour
    repeats its first point, so two rows or columns of the cost matrix are equal), the choice
    depends on the order of Boost's 4-ary heap, and the search is redone by
    :func:`_dijkstra_heap`, which replays it (``exact_ties=False`` takes the left, then upper,
    then diagonal neighbour instead: faster, not always the official path)."""
    n1, n2 = cost.shape
    # distances stored by anti-diagonal: S[k, x] = D[x, k - x], so that each diagonal is a slice
    nk = n1 + n2 - 1
    xs_all = np.arange(n1)
    S = np.full((nk, n1), np.inf)
    C = np.zeros((nk, n1))
    kk = xs_all[:, None] + np.arange(n2)[None, :]
    C[kk, xs_all[:, None]] = cost
    S[0, 0] = 0.0
    row0 = np.cumsum(cost[0, 1:])  # sequential sums, as the relaxations along the edges
    col0 = np.cumsum(cost[1:, 0])
    S[np.arange(1, n2), 0] = row0
    S[np.arange(1, n1), np.arange(1, n1)] = col0
    for k in range(2, nk):
        x0, x1 = max(1, k - (n2 - 1)), min(n1 - 1, k - 1)
        if x0 > x1:
            continue
        up = S[k - 1, x0 - 1:x1]  # D[x-1, y]
        left = S[k - 1, x0:x1 + 1]  # D[x, y-1]
        diag = S[k - 2, x0 - 1:x1]  # D[x-1, y-1]
        S[k, x0:x1 + 1] = np.minimum(np.minimum(up, left), diag) + C[k, x0:x1 + 1]
    D = _Skewed(S)
    path = []
    x, y = n1 - 1, n2 - 1
    while x or y:
        path.append((x, y))
        if x == 0:
            y -= 1
        elif y == 0:
            x -= 1
        else:
            left, up, diag = float(D[x, y - 1]), float(D[x - 1, y]), float(D[x - 1, y - 1])
            best = min(left, up, diag)
            if exact_ties and int(left == best) + int(up == best) + int(diag == best) > 1:
                return _dijkstra_heap(cost)
            if left == best:
                y -= 1
            elif up == best:
                x -= 1
            else:
                x, y = x - 1, y - 1
    path.append((0, 0))
    return _path_result(cost, path)


class _Skewed:
    """D[x, y] view of the anti-diagonal storage."""

    def __init__(self, S: np.ndarray):
        self.S = S

    def __getitem__(self, xy):
        x, y = xy
        return self.S[x + y, x]


def _path_result(cost: np.ndarray, path: list):
    min_cost, min_node = math.inf, path[0]
    for node in path[:-1]:
        c = cost[node]
        if c < min_cost:
            min_cost, min_node = c, node
    return np.asarray(path, dtype=np.float64), (int(min_node[0]), int(min_node[1]))


def _dijkstra_heap(cost: np.ndarray):
    """Boost's ``dijkstra_shortest_paths`` on the grid graph, replayed step by step: a 4-ary
    heap keyed on distance (strict comparisons when sifting), out-edges of a node in the order
    right, down, diagonal, a node relaxed only by a strictly shorter distance. Stops when the
    last node is settled (the predecessors on its path are final by then)."""
    n1, n2 = cost.shape
    N = n1 * n2
    c = cost.ravel().tolist()
    inf = math.inf
    dist = [inf] * N
    pred = [-1] * N
    state = bytearray(N)  # 0 new, 1 queued, 2 settled
    pos = [0] * N
    heap = [0]
    dist[0] = 0.0
    state[0] = 1
    dest = N - 1
    while heap:
        u = heap[0]
        last = heap.pop()
        if heap:  # move the last element to the root and sift it down
            dl = dist[last]
            i, n = 0, len(heap)
            while True:
                f = 4 * i + 1
                if f >= n:
                    break
                sm, sd = f, dist[heap[f]]
                for k in range(f + 1, f + 4 if f + 4 <= n else n):
                    dk = dist[heap[k]]
                    if dk < sd:
                        sm, sd = k, dk
                if sd < dl:
                    heap[i] = heap[sm]
                    pos[heap[i]] = i
                    i = sm
                else:
                    break
            heap[i] = last
            pos[last] = i
        state[u] = 2
        if u == dest:
            break
        x, y = divmod(u, n2)
        du = dist[u]
        for v, ok in ((u + 1, y + 1 < n2), (u + n2, x + 1 < n1), (u + n2 + 1, x + 1 < n1 and y + 1 < n2)):
            if not ok or state[v] == 2:
                continue
            nd = du + c[v]
            if state[v] == 0:
                dist[v] = nd
                pred[v] = u
                state[v] = 1
                heap.append(v)
                i = len(heap) - 1
            elif nd < dist[v]:
                dist[v] = nd
                pred[v] = u
                i = pos[v]
            else:
                continue
            while i > 0:  # sift up
                p = (i - 1) >> 2
                if nd < dist[heap[p]]:
                    heap[i] = heap[p]
                    pos[heap[i]] = i
                    i = p
                else:
                    break
            heap[i] = v
            pos[v] = i
    path = []
    v = dest
    while v != 0:
        path.append(divmod(v, n2))
        v = pred[v]
    path.append((0, 0))
    return _path_result(cost, path)


def _bijective(pairs: np.ndarray, cost: np.ndarray, side: int) -> np.ndarray:
    """Keep, for every point of one side (ascending), its cheapest pair (the first one in path
    order on equal costs)."""
    p = pairs.astype(int)
    c = cost[p[:, 0], p[:, 1]]
    order = np.lexsort((np.arange(len(p)), c, p[:, side]))
    ids = p[order, side]
    first = np.ones(len(ids), bool)
    first[1:] = ids[1:] != ids[:-1]
    return p[order[first]]


def contour_descriptor(mask: np.ndarray):
    """The part of T that depends on one mask only: the densified longest contour and its
    shape-context histograms, or None when the mask has no usable contour. Computing it once per
    frame halves the work of a sequence (every frame is in two consecutive pairs)."""
    polys = mask_polygons(mask)
    if not polys:
        return None
    pts = upsample_contour(_longest(polys))
    return pts, shape_context(pts)


def descriptor_cost(d1, d2, exact_ties: bool = True) -> float:
    """Raw T between two descriptors (NaN when either is None)."""
    if d1 is None or d2 is None:
        return math.nan
    if d1[1].shape == d2[1].shape and np.array_equal(d1[1], d2[1]):
        # same histograms (same or translated shape): the cost matrix has a zero diagonal, both
        # alignments follow zero-cost nodes only (the first ends on the zero last node, so the
        # second starts at (0, 0)), and the official result is exactly 0
        return 0.0
    cost = hist_cost(d1[1], d2[1])
    _, (mx, my) = _shortest_path(cost, exact_ties)
    # start both contours just after the cheapest node of the first alignment, align again
    cost2 = np.roll(cost, -(my + 1), axis=1)
    cost2 = np.roll(cost2, -(mx + 1), axis=0)
    pairs, _ = _shortest_path(cost2, exact_ties)
    pairs[:, 0] = np.mod(pairs[:, 0] + mx + 1, cost.shape[0])
    pairs[:, 1] = np.mod(pairs[:, 1] + my + 1, cost.shape[1])
    pairs = _bijective(pairs, cost, 0)
    pairs = _bijective(pairs, cost, 1)
    return float(np.average(cost[pairs[:, 0], pairs[:, 1]]))


def t_stability(mask_t: np.ndarray, mask_t1: np.ndarray, exact_ties: bool = True) -> float:
    """Raw DAVIS-2016 temporal (in)stability between two masks (no x5 factor); NaN when either
    mask has no usable contour."""
    d1 = contour_descriptor(mask_t)
    d2 = contour_descriptor(mask_t1) if d1 is not None else None
    return descriptor_cost(d1, d2, exact_ties)


def t_stability_sequence(masks, exact_ties: bool = True) -> np.ndarray:
    """Raw T between consecutive masks of an iterable (len(masks) - 1 values)."""
    out = []
    prev = None
    for i, m in enumerate(masks):
        cur = contour_descriptor(m)
        if i:
            out.append(descriptor_cost(prev, cur, exact_ties))
        prev = cur
    return np.asarray(out, dtype=np.float64)
