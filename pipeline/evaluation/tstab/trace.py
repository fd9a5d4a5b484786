"""Step 1 of T: contour tracing on the crack grid (doubled coordinates), junctions and pieces."""

from __future__ import annotations

import numpy as np


# --------------------------------------------------------------------------------------------
# 1. tracing
# --------------------------------------------------------------------------------------------
class Grid:
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


def _explore(g: Grid, start: tuple[int, int], first_crack: tuple[int, int]):
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


class Piece:
    __slots__ = ("orig", "end", "cracks")

    def __init__(self, orig: int, end: int, cracks: list):
        self.orig, self.end, self.cracks = orig, end, cracks


def trace(g: Grid):
    """Junctions (id -> corner) and boundary pieces, in the official exploration order."""
    sx, sy, cont = g.sx, g.sy, g.cont
    junctions: list[tuple[int, int]] = []  # index id-1 -> corner position
    pieces: list[Piece] = []
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
        pieces.append(Piece(jid, end, cracks))
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
        pieces.append(Piece(jid, end, cracks))
    return junctions, pieces
