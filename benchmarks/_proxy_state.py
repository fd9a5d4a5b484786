"""What makes the accuracy benchmark (``accuracy_proxy.py``) resumable: the records of what a run
has finished, under ``OUT/state/``, and the arguments it was started with (``OUT/settings.json``).

* **Settings** (:func:`check_settings`): the arguments that decide the results, written on first
  use; a later run with other ones is refused (:class:`OutDirInUse`, naming the folder).
* **A step** (:func:`run_step`: preprocessing or a training run): ``OUT/state/<name>.json`` holds
  its key (the command, OUT written as ``OUT``, and the digests of the weights it starts from),
  ``running`` or ``done``, and its seconds. Done with the same key and its output present: skipped.
  The same key, not done: run again in the same folder (a training run continues from its last
  checkpoint). Another key, or a folder without a record: the folder is removed and the step
  started again.
* **An evaluation** (:func:`run_unit`: a variant and seed): ``OUT/state/eval-<name>.json`` holds
  its key (settings, weights and ``segment.yaml`` digests), scores, timings and seconds, written
  once it is complete; the same key: skipped, else evaluated (again).

Records are written atomically, so a killed run leaves each either whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from pipeline.core.atomic import atomic_write_text
from pipeline.core.errors import PipelineError


class OutDirInUse(PipelineError):
    """``--out`` holds a run made with other arguments."""


def log(msg: str) -> None:
    print(f"[accuracy_proxy] {msg}", file=sys.stderr, flush=True)   # stdout: table or JSON


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def clean(x):
    """NaN and infinities as null (strict JSON: a report reads back equal to itself)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(clean(data), indent=1) + "\n")


def check_settings(out: Path, settings: dict) -> None:
    """``OUT/settings.json`` written on first use; a later run with other settings refused."""
    path = out / "settings.json"
    old = read_json(path)
    if old is None:
        write_json(path, settings)
        return
    changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if changed:
        what = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
        raise OutDirInUse(f"{out} holds a run made with other arguments ({what})",
                          f"re-run with the arguments of {path} to continue it, or give "
                          "another --out (or delete that folder to start over)")


def relative(cmd: list[str], out: Path) -> list[str]:
    """A command as a key records it: OUT for the output folder, no interpreter path."""
    return [c.replace(str(out), "OUT") for c in cmd[1:]]


def run_step(name: str, key: dict, out: Path, folder: Path, output: Path,
             run: Callable[[], float]) -> dict:
    """``run()`` (its seconds) unless the record says ``name`` is done with ``key`` and
    ``output`` exists; returns the record (``skipped``: whether it was kept)."""
    state_file = out / "state" / f"{name}.json"
    st = read_json(state_file)
    if st and st.get("key") == key and st.get("state") == "done" and output.exists():
        log(f"{name}: done with the same settings: skipped")
        return {**st, "skipped": True}
    before = 0.0
    if st and st.get("key") == key:
        before = float(st.get("seconds", 0.0))
        log(f"{name}: stopped earlier: continues in {folder}")
    elif folder.exists():
        log(f"{name}: {folder} holds a run with other settings or inputs: started again")
        shutil.rmtree(folder)
    write_json(state_file, {"key": key, "state": "running", "seconds": before})
    sec = run()
    record = {"key": key, "state": "done", "seconds": before + sec}
    write_json(state_file, record)
    log(f"{name}: {sec / 60:.1f} min")
    return {**record, "skipped": False}


def run_unit(out: Path, name: str, key: dict, run: Callable[[], tuple[dict, dict]]) -> dict:
    """One evaluation unless its record names ``key``: ``run()`` gives (scores, timing); the
    record ``OUT/state/eval-<name>.json`` keeps them (``skipped``: whether it was kept)."""
    path = out / "state" / f"eval-{name}.json"
    rec = read_json(path)
    if rec and rec.get("key") == key:
        log(f"{name}: complete with the same settings and weights: skipped")
        return {**rec, "skipped": True}
    if rec:
        log(f"{name}: its record names other settings or weights: evaluated again")
    t = time.perf_counter()
    scores, timing = run()
    rec = {"key": key, "seconds": time.perf_counter() - t, "scores": scores, "timing": timing}
    write_json(path, rec)
    log(f"{name}: {rec['seconds'] / 60:.1f} min")
    return {**rec, "skipped": False}
