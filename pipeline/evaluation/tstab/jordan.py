"""Step 2 of T: pieces chained into closed (Jordan) curves, turning at junctions so that each curve
keeps the foreground on one side."""

from __future__ import annotations

from pipeline.evaluation.tstab.trace import Piece


# --------------------------------------------------------------------------------------------
# 2. Jordan curves
# --------------------------------------------------------------------------------------------
def _other_end(p: Piece, j: int) -> int:
    return p.end if j == p.orig else p.orig


def _first_crack_at(p: Piece, j: int):
    return p.cracks[0] if p.orig == j else p.cracks[-1]


def jordan(junctions, pieces):
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
