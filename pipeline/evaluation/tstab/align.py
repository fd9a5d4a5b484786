"""Step 4b of T: aligning two contours by the cheapest monotone path through their cost matrix
(dynamic programming, with Boost's 4-ary-heap Dijkstra replayed on exact ties) and one-to-one
pairs."""

from __future__ import annotations

import math

import numpy as np


def shortest_path(cost: np.ndarray, exact_ties: bool = True):
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


def bijective(pairs: np.ndarray, cost: np.ndarray, side: int) -> np.ndarray:
    """Keep, for every point of one side (ascending), its cheapest pair (the first one in path
    order on equal costs)."""
    p = pairs.astype(int)
    c = cost[p[:, 0], p[:, 1]]
    order = np.lexsort((np.arange(len(p)), c, p[:, side]))
    ids = p[order, side]
    first = np.ones(len(ids), bool)
    first[1:] = ids[1:] != ids[:-1]
    return p[order[first]]
