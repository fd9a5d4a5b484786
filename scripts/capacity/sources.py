"""Where each figure of the capacity plan comes from: :class:`Sources` hands out the bracketed
tags ([P1] published, [M1] measured, [C1] config, [A1] assumed) that the document's Sources table
lists, and the readers of the recorded inputs (``benchmarks/results/``) say what is missing and
how to record it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import FileProblem, InputMissing

REPO = Path(__file__).resolve().parents[2]
RESULTS = "benchmarks/results"


@dataclass
class Sources:
    entries: list[tuple[str, str, str]] = field(default_factory=list)   # (tag, kind, text)

    def cite(self, kind: str, text: str) -> str:
        """The tag of (kind, text), added on first use: ``[M3]``."""
        for tag, k, t in self.entries:
            if (k, t) == (kind, text):
                return f"[{tag}]"
        letter = {"published": "P", "measured": "M", "config": "C", "assumed": "A"}[kind]
        n = sum(1 for tag, k, _ in self.entries if k == kind) + 1
        self.entries.append((f"{letter}{n}", kind, text))
        return f"[{letter}{n}]"


def when(entry: dict) -> str:
    """The date of a recorded result, and the machine's load when the figure was taken."""
    load = entry["result"].get("load_average")
    return entry["date"] + (f", load average {load[0]:g}" if load else "")


def load_json(results: Path, name: str) -> dict:
    path = results / name
    if not path.is_file():
        raise InputMissing(f"{path} does not exist. Fix: record it: python "
                           f"benchmarks/results/record.py {RESULTS}/{name} -- <the command in "
                           f"{RESULTS}/README.md>")
    entry = json.loads(path.read_text())
    for key in ("command", "date", "result"):
        if key not in entry:
            raise FileProblem(path, f"no {key!r} key", "write it with benchmarks/results/record.py")
    return entry


def dig(entry: dict, key: str):
    """``entry["result"]`` at the dotted ``key`` (list items by index)."""
    value = entry["result"]
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def sbatch_option(path: Path, name: str) -> int:
    m = re.search(rf"^#SBATCH --{name}=(\d+)", path.read_text(), re.M)
    if not m:
        raise FileProblem(path, f"no '#SBATCH --{name}=N' line", "pass the figure as an option")
    return int(m.group(1))



def cite_fig(src: Sources, fig: dict, refs: dict) -> str:
    """The tag of a figure of datasets.yaml: its reference (or its own words), published
    unless marked ``kind: assumed``."""
    ref = refs.get(fig["source"], fig["source"])
    kind = fig.get("kind", "published")
    text = ref + (f" ({fig['note']})" if fig.get("note") else "") + (
        " (approximate)" if fig.get("approx") else "")
    return src.cite(kind, text)

