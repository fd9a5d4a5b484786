#!/usr/bin/env python
"""Run a benchmark (or the preflight) and keep its JSON here with the command and the date.

    python benchmarks/results/record.py benchmarks/results/loader.json -- \\
        python benchmarks/loader_throughput.py --davis-root DAVIS --json
    python benchmarks/results/record.py benchmarks/results/preflight.json \\
        --result-file runs/preflight.json -- python launch/preflight.py --out runs/preflight.json

The command runs from the repository root; its JSON is its standard output (or
``--result-file``, a file it writes). The file written holds ``{"command", "date", "result"}``;
paths inside the repository are made relative to it. ``scripts/capacity_plan.py`` reads these
files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_json(text: str):
    """The JSON object a command printed (the whole output, or from its first line that opens
    an object: some commands log lines before it)."""
    try:
        return json.loads(text)
    except ValueError:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("{"):
                return json.loads("\n".join(lines[i:]))
        raise


def relative(value, root: str):
    """``value`` with the repository's absolute path taken out of every string."""
    if isinstance(value, str):
        return value.replace(root + "/", "").replace(root, ".")
    if isinstance(value, list):
        return [relative(v, root) for v in value]
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    return value


def record(out: Path, command: list[str], result_file: str | None, date: str | None) -> dict:
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode not in (0, 1):   # 1: a benchmark or preflight verdict FAIL, still measured
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{shlex.join(command)} exited {proc.returncode}")
    text = (REPO / result_file).read_text() if result_file else proc.stdout
    entry = {"command": shlex.join(command),
             "date": date or datetime.date.today().isoformat(),
             "result": relative(parse_json(text), str(REPO))}
    out.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
    return entry


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: record.py OUT.json [--result-file F] -- COMMAND ...")
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the JSON file to write")
    p.add_argument("--result-file", help="read the result from this file the command writes")
    p.add_argument("--date", help="the date to record (default: today)")
    a = p.parse_args(argv[:cut])
    record(Path(a.out), argv[cut + 1:], a.result_file, a.date)
    return 0


if __name__ == "__main__":
    sys.exit(main())
