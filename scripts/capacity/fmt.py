"""How the capacity plan writes figures (significant digits, bytes, durations) and tables (a
row's sources column holds its tags once each, in the Sources table's order)."""

from __future__ import annotations

import re


def num(x: float, digits: int = 3) -> str:
    """A figure with ``digits`` significant digits, thousands separated."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (digits - 1):
        return f"{round(x):,}"
    return f"{x:.{digits}g}"


def size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def hours(seconds: float) -> str:
    if seconds >= 360:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.2g} min" if seconds >= 60 else f"{seconds:.2g} s"


TAG = re.compile(r"\[([PMCA])(\d+)\]")
KIND_ORDER = "PMCA"


def tags(text: str) -> str:
    """The tags in ``text``, each once, in the Sources table's order."""
    found = sorted(set(TAG.findall(text)), key=lambda t: (KIND_ORDER.index(t[0]), int(t[1])))
    return "".join(f"[{k}{n}]" for k, n in found)


def mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    if head[-1] == "sources":
        rows = [r[:-1] + [tags(r[-1])] for r in rows]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]
