"""Temporal stability T of DAVIS 2016, re-implemented in numpy.

The DAVIS-2016 measure (Perazzi et al., CVPR 2016) compares the contour of a mask at frame t with
the contour at frame t+1: both are turned into polygons, densified, described with shape contexts,
aligned by dynamic time warping, and T is the mean matching cost of the aligned points. The
official tool does the geometry in a C++ module; this module follows the same steps so that the
numbers agree (see ``tests/unit/test_metrics.py`` for the tolerance reached on the golden cases):

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

The package follows the steps: :mod:`~pipeline.evaluation.tstab.params`,
:mod:`~pipeline.evaluation.tstab.trace` (1), :mod:`~pipeline.evaluation.tstab.jordan` (2),
:mod:`~pipeline.evaluation.tstab.polygons` (3), :mod:`~pipeline.evaluation.tstab.context` and
:mod:`~pipeline.evaluation.tstab.align` (4); T itself is computed here.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.evaluation.tstab.align import bijective, shortest_path
from pipeline.evaluation.tstab.context import longest, hist_cost, shape_context, upsample_contour
from pipeline.evaluation.tstab.polygons import mask_polygons


def contour_descriptor(mask: np.ndarray):
    """The part of T that depends on one mask only: the densified longest contour and its
    shape-context histograms, or None when the mask has no usable contour. Computing it once per
    frame halves the work of a sequence (every frame is in two consecutive pairs)."""
    polys = mask_polygons(mask)
    if not polys:
        return None
    pts = upsample_contour(longest(polys))
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
    _, (mx, my) = shortest_path(cost, exact_ties)
    # start both contours just after the cheapest node of the first alignment, align again
    cost2 = np.roll(cost, -(my + 1), axis=1)
    cost2 = np.roll(cost2, -(mx + 1), axis=0)
    pairs, _ = shortest_path(cost2, exact_ties)
    pairs[:, 0] = np.mod(pairs[:, 0] + mx + 1, cost.shape[0])
    pairs[:, 1] = np.mod(pairs[:, 1] + my + 1, cost.shape[1])
    pairs = bijective(pairs, cost, 0)
    pairs = bijective(pairs, cost, 1)
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
